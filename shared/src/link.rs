//! Shareable latent links: the part of a page URL after `#` that names one face.
//!
//! Two forms, both plain ASCII:
//!
//! - `seed=<n>`: the latent of seed `n` ([`crate::latent::latent_for_seed`]), a decimal `u64`;
//! - `z=<base64url>`: an exact latent, each value an IEEE half-precision float, little-endian,
//!   base64url without padding (a 512-long latent is 1,366 characters);
//!
//! optionally followed by how the face is drawn: `&psi=0.7`, the truncation ψ
//! ([`crate::Generator::forward_truncated`]), a number from 0 to 1 (1, no truncation, is left out);
//! and by edits of the face, `&edit=age:2.5,gender:-1`: amounts along the model's named latent
//! directions ([`crate::latent::edit_latent`]), in standard deviations from −3 to 3
//! ([`MAX_EDIT`]). Which names a model has, only the model knows: the page checks them.
//!
//! Parsing looks at the length before anything else and only ever decodes numbers: a link can name
//! a face and nothing more. Every error says what was wrong in words a visitor can act on.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use half::f16;

/// Longest link accepted, in characters (a latent of 8,192 values fits).
pub const MAX_LINK_CHARS: usize = 22_000;

/// The largest edit amount a link (and the page's sliders) may give, in standard deviations of
/// the latent along a direction.
pub const MAX_EDIT: f64 = 3.0;

/// Longest direction name in a link.
const MAX_EDIT_NAME: usize = 24;

/// What a link names.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkTarget {
    /// No face (an empty hash): show the default grid.
    Empty,
    /// The latent of this seed.
    Seed(u64),
    /// This exact latent.
    Latent(Vec<f32>),
}

/// A whole link: the face it names and how it is drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// The face.
    pub target: LinkTarget,
    /// The truncation ψ (0 … 1), when the link gives one.
    pub truncation: Option<f64>,
    /// Edits of the face: `(direction name, amount)`, in the link's order, each name once.
    pub edits: Vec<(String, f64)>,
}

/// Why a link was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinkError {
    /// Longer than [`MAX_LINK_CHARS`].
    #[error("the link is {0} characters long; at most {max} are accepted", max = MAX_LINK_CHARS)]
    TooLong(usize),
    /// Not of the form `seed=…` or `z=…`.
    #[error("the link should look like #seed=123 or #z=…, not “{0}”")]
    Form(String),
    /// The seed is not a whole number in range.
    #[error("the seed “{0}” is not a whole number between 0 and 18446744073709551615")]
    Seed(String),
    /// The latent is not valid base64url.
    #[error("the latent in the link is damaged (not base64url)")]
    Base64,
    /// The latent has the wrong number of values.
    #[error("the latent in the link has {got} values; this model takes {want}")]
    LatentSize {
        /// Values in the link.
        got: usize,
        /// Values the model takes.
        want: usize,
    },
    /// A value is infinite or not a number.
    #[error("the latent in the link holds a value that is not a finite number")]
    NotFinite,
    /// The truncation is not a number from 0 to 1.
    #[error("the truncation “psi={0}” in the link is not a number from 0 to 1")]
    Truncation(String),
    /// Something after the face that links do not hold.
    #[error(
        "the link holds “{0}”, which is not something a link can say (only &psi=… and &edit=…)"
    )]
    Option(String),
    /// An edit that is not `name:amount`.
    #[error(
        "the edit “{0}” in the link should look like age:2.5 (a direction's name and an amount)"
    )]
    EditForm(String),
    /// An edit amount beyond ±[`MAX_EDIT`].
    #[error("the edit “{name}” by {amount} is out of range: amounts go from −3 to +3")]
    EditRange {
        /// The direction.
        name: String,
        /// The amount asked for.
        amount: f64,
    },
    /// The same direction twice.
    #[error("the link edits “{0}” twice")]
    EditTwice(String),
    /// Edits without a face to edit.
    #[error("the link gives edits but no face (#seed=… or #z=…) to edit")]
    EditNothing,
}

/// Shortens `s` to a few characters for an error message.
fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(24).collect();
    if s.chars().nth(24).is_some() {
        out.push('…');
    }
    out
}

/// Parses a link (with or without its leading `#`) for a model with latents of `latent_size`: the
/// face it names (see [`parse_full_link`] for how it is drawn too).
pub fn parse_link(link: &str, latent_size: usize) -> Result<LinkTarget, LinkError> {
    parse_full_link(link, latent_size).map(|l| l.target)
}

/// Parses a whole link: the face and its options (`&psi=…`).
pub fn parse_full_link(link: &str, latent_size: usize) -> Result<Link, LinkError> {
    if link.len() > MAX_LINK_CHARS {
        return Err(LinkError::TooLong(link.len()));
    }
    let body = link.strip_prefix('#').unwrap_or(link).trim();
    let mut parts = body.split('&');
    let face = parts.next().unwrap_or("");
    let mut truncation = None;
    let mut edits = Vec::new();
    for option in parts {
        match option.split_once('=') {
            Some(("psi", value)) => truncation = Some(parse_truncation(value)?),
            Some(("edit", value)) => edits = parse_edits(value)?,
            _ => return Err(LinkError::Option(excerpt(option))),
        }
    }
    // A link may give only options (`#psi=0.7`): no face, drawn that way.
    let (face, truncation) = match face.split_once('=') {
        Some(("psi", value)) if truncation.is_none() => ("", Some(parse_truncation(value)?)),
        _ => (face, truncation),
    };
    let target = parse_face(face, latent_size)?;
    if target == LinkTarget::Empty && !edits.is_empty() {
        return Err(LinkError::EditNothing);
    }
    Ok(Link {
        target,
        truncation,
        edits,
    })
}

/// Edits from a link: `name:amount` pairs separated by commas; names of lower-case letters,
/// digits and `_`, amounts plain decimals within ±[`MAX_EDIT`].
fn parse_edits(value: &str) -> Result<Vec<(String, f64)>, LinkError> {
    let mut edits: Vec<(String, f64)> = Vec::new();
    for edit in value.split(',') {
        let form = || LinkError::EditForm(excerpt(edit));
        let (name, amount) = edit.split_once(':').ok_or_else(form)?;
        let name_ok = !name.is_empty()
            && name.len() <= MAX_EDIT_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        let digits = amount.strip_prefix(['+', '-']).unwrap_or(amount);
        let amount_ok = !digits.is_empty()
            && digits.len() <= 8
            && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        let amount = match amount.parse::<f64>() {
            Ok(a) if name_ok && amount_ok && a.is_finite() => a,
            _ => return Err(form()),
        };
        if amount.abs() > MAX_EDIT {
            return Err(LinkError::EditRange {
                name: name.to_string(),
                amount,
            });
        }
        if edits.iter().any(|(n, _)| n == name) {
            return Err(LinkError::EditTwice(name.to_string()));
        }
        edits.push((name.to_string(), amount));
    }
    Ok(edits)
}

/// The link's suffix for edits: `&edit=age:2.5,gender:-1` (amounts to a hundredth; edits of
/// 0 left out), or nothing without any.
pub fn edits_suffix(edits: &[(String, f64)]) -> String {
    let parts: Vec<String> = edits
        .iter()
        .map(|(name, amount)| {
            (
                name,
                (amount.clamp(-MAX_EDIT, MAX_EDIT) * 100.0).round() / 100.0,
            )
        })
        .filter(|(_, amount)| *amount != 0.0)
        .map(|(name, amount)| format!("{name}:{amount}"))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("&edit={}", parts.join(","))
    }
}

/// A truncation ψ from a link: a plain decimal from 0 to 1.
fn parse_truncation(value: &str) -> Result<f64, LinkError> {
    let plain = !value.is_empty()
        && value.len() <= 8
        && value.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    match value.parse::<f64>() {
        Ok(psi) if plain && (0.0..=1.0).contains(&psi) => Ok(psi),
        _ => Err(LinkError::Truncation(excerpt(value))),
    }
}

/// The link's suffix for a truncation ψ: `&psi=0.7`, or nothing for 1 (none).
pub fn truncation_suffix(psi: f64) -> String {
    if psi >= 1.0 || !psi.is_finite() {
        String::new()
    } else {
        format!("&psi={}", (psi.max(0.0) * 100.0).round() / 100.0)
    }
}

/// The face part of a link.
fn parse_face(body: &str, latent_size: usize) -> Result<LinkTarget, LinkError> {
    if body.is_empty() {
        return Ok(LinkTarget::Empty);
    }
    let Some((key, value)) = body.split_once('=') else {
        return Err(LinkError::Form(excerpt(body)));
    };
    match key {
        "seed" => {
            let ok =
                !value.is_empty() && value.len() <= 20 && value.bytes().all(|b| b.is_ascii_digit());
            let seed = if ok { value.parse::<u64>().ok() } else { None };
            seed.map(LinkTarget::Seed)
                .ok_or_else(|| LinkError::Seed(excerpt(value)))
        }
        "z" => {
            // Damaged text first (“!!!” is not base64url, whatever its length), then the length,
            // which bounds the work before decoding: exactly as long as the model's latent.
            let alphabet = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
            if !value.bytes().all(alphabet) {
                return Err(LinkError::Base64);
            }
            let want_chars = (latent_size * 2 * 4).div_ceil(3);
            if value.len() != want_chars {
                let got = value.len() * 3 / 4 / 2;
                return Err(LinkError::LatentSize {
                    got,
                    want: latent_size,
                });
            }
            let bytes = URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|_| LinkError::Base64)?;
            if bytes.len() != latent_size * 2 {
                return Err(LinkError::LatentSize {
                    got: bytes.len() / 2,
                    want: latent_size,
                });
            }
            let z: Vec<f32> = bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect();
            if z.iter().any(|v| !v.is_finite()) {
                return Err(LinkError::NotFinite);
            }
            Ok(LinkTarget::Latent(z))
        }
        _ => Err(LinkError::Form(excerpt(body))),
    }
}

/// The link (without `#`) of a seed.
pub fn seed_link(seed: u64) -> String {
    format!("seed={seed}")
}

/// The link (without `#`) of an exact latent, stored in half precision.
///
/// Values beyond the half-precision range are clamped to it (a latent never has them).
pub fn latent_link(z: &[f32]) -> String {
    let bytes: Vec<u8> = z
        .iter()
        .flat_map(|&v| {
            f16::from_f32(if v.is_finite() {
                v.clamp(-65504.0, 65504.0)
            } else {
                0.0
            })
            .to_le_bytes()
        })
        .collect();
    format!("z={}", URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latent::latent_for_seed;

    #[test]
    fn characters_outside_base64url_are_named_as_such_whatever_the_length() {
        for link in ["#z=!!!", "#z=ab+c", "#z=a b"] {
            assert!(
                matches!(parse_link(link, 128), Err(LinkError::Base64)),
                "{link}: {:?}",
                parse_link(link, 128)
            );
        }
        assert!(matches!(
            parse_link("#z=abc", 128),
            Err(LinkError::LatentSize { want: 128, .. })
        ));
    }

    #[test]
    fn seed_links_round_trip() {
        for seed in [0, 1, 42, u32::MAX as u64, u64::MAX] {
            assert_eq!(
                parse_link(&format!("#{}", seed_link(seed)), 512),
                Ok(LinkTarget::Seed(seed))
            );
        }
        assert_eq!(parse_link("", 512), Ok(LinkTarget::Empty));
        assert_eq!(parse_link("#", 512), Ok(LinkTarget::Empty));
    }

    #[test]
    fn latent_links_round_trip_in_half_precision() {
        let z = latent_for_seed(7, 512);
        let link = latent_link(&z);
        assert_eq!(link.len(), 2 + 1366);
        let LinkTarget::Latent(back) = parse_link(&link, 512).unwrap() else {
            panic!("not a latent")
        };
        assert_eq!(back.len(), 512);
        for (a, b) in z.iter().zip(&back) {
            // Half precision keeps 11 significant bits.
            assert!((a - b).abs() <= a.abs() * 1e-3 + 1e-6, "{a} vs {b}");
        }
        // Encoding what was decoded is exact.
        assert_eq!(latent_link(&back), link);
    }

    #[test]
    fn links_carry_a_truncation() {
        let full = |l: &str| parse_full_link(l, 8);
        assert_eq!(
            full("#seed=5&psi=0.7"),
            Ok(Link {
                target: LinkTarget::Seed(5),
                truncation: Some(0.7),
                edits: vec![]
            })
        );
        let z = latent_link(&latent_for_seed(1, 8));
        let with = format!("#{z}{}", truncation_suffix(0.5));
        assert_eq!(full(&with).unwrap().truncation, Some(0.5));
        assert_eq!(parse_link(&with, 8), parse_link(&z, 8));
        assert_eq!(
            full("#psi=0.25"),
            Ok(Link {
                target: LinkTarget::Empty,
                truncation: Some(0.25),
                edits: vec![]
            })
        );
        assert_eq!(full("#seed=5").unwrap().truncation, None);
        assert_eq!(truncation_suffix(1.0), "");
        assert_eq!(truncation_suffix(0.7), "&psi=0.7");
        assert_eq!(truncation_suffix(0.333), "&psi=0.33");
        for bad in ["2", "-0.5", "abc", "", "1e-1", "0.5.5", "NaN", "inf"] {
            assert_eq!(
                full(&format!("#seed=5&psi={bad}")),
                Err(LinkError::Truncation(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(
            full("#seed=5&style=dark"),
            Err(LinkError::Option("style=dark".into()))
        );
        assert!(
            full("#seed=5&psi=7")
                .unwrap_err()
                .to_string()
                .contains("psi=7")
        );
    }

    #[test]
    fn links_carry_edits() {
        let full = |l: &str| parse_full_link(l, 8);
        let edits = |l: &str| full(l).map(|link| link.edits);
        let pair = |n: &str, a: f64| (n.to_string(), a);
        assert_eq!(
            full("#seed=5&psi=0.7&edit=age:2.5,gender:-1"),
            Ok(Link {
                target: LinkTarget::Seed(5),
                truncation: Some(0.7),
                edits: vec![pair("age", 2.5), pair("gender", -1.0)]
            })
        );
        let z = latent_link(&latent_for_seed(1, 8));
        assert_eq!(
            edits(&format!("#{z}&edit=sefa1:+0.25")),
            Ok(vec![pair("sefa1", 0.25)])
        );
        assert_eq!(
            edits("#seed=5&edit=age:3,gender:-3"),
            Ok(vec![pair("age", 3.0), pair("gender", -3.0)])
        );
        // The suffix writes what parses back, to a hundredth, zero edits left out.
        let made = [pair("age", 2.456), pair("gender", 0.0), pair("sefa2", -1.0)];
        assert_eq!(edits_suffix(&made), "&edit=age:2.46,sefa2:-1");
        assert_eq!(
            edits(&format!("#seed=5{}", edits_suffix(&made))),
            Ok(vec![pair("age", 2.46), pair("sefa2", -1.0)])
        );
        assert_eq!(edits_suffix(&[pair("age", 0.0)]), "");
        // Out of range, named with its amount.
        let err = full("#seed=5&edit=age:9").unwrap_err();
        assert_eq!(
            err,
            LinkError::EditRange {
                name: "age".into(),
                amount: 9.0
            }
        );
        assert!(err.to_string().contains("age") && err.to_string().contains('9'));
        assert!(matches!(
            full("#seed=5&edit=age:-3.01"),
            Err(LinkError::EditRange { .. })
        ));
        for bad in [
            "age", "age:", ":2", "Age:1", "age:1e1", "age:NaN", "age:inf", "a-b:1", "age:1:2", "",
        ] {
            assert!(
                matches!(
                    full(&format!("#seed=5&edit={bad}")),
                    Err(LinkError::EditForm(_))
                ),
                "{bad}: {:?}",
                full(&format!("#seed=5&edit={bad}"))
            );
        }
        assert_eq!(
            full("#seed=5&edit=age:1,age:2"),
            Err(LinkError::EditTwice("age".into()))
        );
        assert_eq!(
            full("#edit=age:1"),
            Err(LinkError::Form("edit=age:1".into()))
        );
        assert_eq!(full("#psi=0.5&edit=age:1"), Err(LinkError::EditNothing));
        assert_eq!(edits("#seed=5"), Ok(vec![]));
    }

    #[test]
    fn bad_links_say_what_is_wrong() {
        assert!(matches!(parse_link("#seed=-1", 8), Err(LinkError::Seed(_))));
        assert!(matches!(
            parse_link("#seed=18446744073709551616", 8),
            Err(LinkError::Seed(_))
        ));
        assert!(matches!(
            parse_link("#seed=1e3", 8),
            Err(LinkError::Seed(_))
        ));
        assert!(matches!(parse_link("#seed=", 8), Err(LinkError::Seed(_))));
        assert!(matches!(parse_link("#hello", 8), Err(LinkError::Form(_))));
        assert!(matches!(
            parse_link("#script=alert(1)", 8),
            Err(LinkError::Form(_))
        ));
        let z = latent_link(&latent_for_seed(1, 8));
        assert_eq!(
            parse_link(&z, 16),
            Err(LinkError::LatentSize { got: 8, want: 16 })
        );
        let broken = format!(
            "z={}",
            z[2..].replace(|c: char| c.is_ascii_alphanumeric(), "*")
        );
        assert_eq!(parse_link(&broken, 8), Err(LinkError::Base64));
        let nan = format!("z={}", URL_SAFE_NO_PAD.encode([0u8, 0, 0xff, 0x7f]));
        let inf = format!("z={}", URL_SAFE_NO_PAD.encode([0u8, 0, 0x00, 0x7c]));
        assert_eq!(parse_link(&nan, 2), Err(LinkError::NotFinite));
        assert_eq!(parse_link(&inf, 2), Err(LinkError::NotFinite));
        let long = format!("#seed={}", "1".repeat(MAX_LINK_CHARS));
        assert_eq!(parse_link(&long, 8), Err(LinkError::TooLong(long.len())));
        // Messages name the problem.
        assert!(
            parse_link("#seed=abc", 8)
                .unwrap_err()
                .to_string()
                .contains("abc")
        );
    }
}
