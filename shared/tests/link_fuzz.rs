//! Link parsing over arbitrary and near-valid strings: it never panics, only ever returns a
//! latent of the model's size, and never allocates more than a small bound, whatever the input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use pggan_model::latent::latent_for_seed;
use pggan_model::link::{LinkTarget, MAX_LINK_CHARS, latent_link, parse_link};
use proptest::prelude::*;

/// Records the largest single allocation a thread makes while its `TRACK` is set (this test
/// binary only; per thread, so tests running side by side do not count each other's).
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TRACK: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = TRACK.try_with(|t| {
            if t.get() {
                let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
            }
        });
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const LATENT: usize = 512;
/// A latent of 512 in f32 is 2 KiB; its bytes 1 KiB; messages are short.
const BOUND: usize = 4 * LATENT + 256;

fn check(link: &str) {
    LARGEST.with(|l| l.set(0));
    TRACK.with(|t| t.set(true));
    let result = parse_link(link, LATENT);
    TRACK.with(|t| t.set(false));
    let largest = LARGEST.with(|l| l.get());
    assert!(
        largest <= BOUND,
        "parsing a {}-character link allocated {largest} bytes at once",
        link.len()
    );
    match result {
        Ok(LinkTarget::Latent(z)) => {
            assert_eq!(z.len(), LATENT);
            assert!(z.iter().all(|v| v.is_finite()));
        }
        Ok(_) => {}
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fn near_valid() -> impl Strategy<Value = String> {
    let good = latent_link(&latent_for_seed(3, LATENT));
    prop_oneof![
        any::<String>(),
        "#?(seed|z|x)=[0-9a-zA-Z_=&#%-]{0,40}",
        "#seed=[0-9]{0,25}",
        (0..good.len(), any::<char>()).prop_map(move |(i, c)| {
            let mut s: Vec<char> = good.chars().collect();
            s[i] = c;
            s.into_iter().collect()
        }),
        (0..60_000usize).prop_map(|n| format!("#z={}", "A".repeat(n))),
        (0..3usize, any::<u8>()).prop_map(|(k, b)| ["#z=", "#seed=", "#"][k].to_string()
            + &char::from(b).to_string().repeat(MAX_LINK_CHARS + 1)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn parsing_never_panics_and_stays_bounded(link in near_valid()) {
        check(&link);
    }
}

#[test]
fn a_valid_latent_link_stays_within_the_bound() {
    check(&latent_link(&latent_for_seed(9, LATENT)));
    check(&format!("#{}", latent_link(&latent_for_seed(9, LATENT))));
}
