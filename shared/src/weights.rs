//! The weight file format: safetensors (f32 or f16) with the architecture in its metadata.
//!
//! Tensor names are module paths (`blocks.0.conv1.weight`); weights are stored unscaled, as
//! trained (the equalised-learning-rate multiplier `gain/√fan_in` is applied at run time and can
//! be recomputed from the shapes). The metadata holds `format`, `kind` and the [`ModelConfig`] as
//! JSON, so a file alone rebuilds its network; any other string entries (images shown, level…)
//! travel along. Python reads the files with `safetensors.numpy.load_file`.

use std::collections::{BTreeMap, HashMap};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::config::ModelConfig;
use crate::generator::Generator;
use crate::tensor::{tensor_from_f32, tensor_to_f32};

/// Value of the `format` metadata entry of files written here.
pub const FORMAT: &str = "pggan-rs/1";

/// Storage precision of a weight file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDtype {
    /// IEEE single precision (exact).
    F32,
    /// IEEE half precision (half the bytes, for the web).
    F16,
    /// bfloat16 (half the bytes, f32's range).
    BF16,
}

/// A weight file that cannot be read or does not fit the network.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// Not a safetensors file, or a damaged one.
    #[error("not a readable safetensors weight file: {0}")]
    Format(String),
    /// The metadata lacks an entry or holds a bad one.
    #[error("weight file metadata: {0}")]
    Metadata(String),
    /// The network has a tensor the file lacks.
    #[error("weight file lacks tensor `{0}`")]
    Missing(String),
    /// A tensor has the wrong shape.
    #[error("tensor `{name}` has shape {found:?} in the file, the network needs {expected:?}")]
    Shape {
        /// Tensor name.
        name: String,
        /// Shape the network needs.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// The file has tensors the network does not.
    #[error("weight file has tensors the network does not: {0:?}")]
    Unexpected(Vec<String>),
    /// A tensor holds NaN or infinity.
    #[error("tensor `{0}` holds NaN or infinite values")]
    NotFinite(String),
    /// A tensor has a storage type other than f32/f16/bf16.
    #[error("tensor `{0}` has unsupported dtype {1}")]
    Dtype(String, String),
}

/// A named tensor read back to the host.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// Module path, dot-separated.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values in row-major order.
    pub values: Vec<f32>,
}

struct Collector {
    path: Vec<String>,
    out: Vec<NamedTensor>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        self.out.push(NamedTensor {
            name: self.path.join("."),
            shape,
            values: tensor_to_f32(t),
        });
    }
}

/// Every float parameter of `module`, by module path, in visiting order.
pub fn collect_tensors<M: Module>(module: &M) -> Vec<NamedTensor> {
    let mut c = Collector {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut c);
    c.out
}

struct Loader<'a> {
    path: Vec<String>,
    tensors: &'a mut HashMap<String, NamedTensor>,
    error: Option<WeightsError>,
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return param;
        }
        let name = self.path.join(".");
        let Some(found) = self.tensors.remove(&name) else {
            self.error = Some(WeightsError::Missing(name));
            return param;
        };
        let expected = param.dims().to_vec();
        if found.shape != expected {
            self.error = Some(WeightsError::Shape {
                name,
                expected,
                found: found.shape,
            });
            return param;
        }
        let shape: [usize; D] = expected.try_into().expect("rank matches");
        param.map(|old| {
            let t = tensor_from_f32(found.values, shape, &old.device());
            if old.is_require_grad() {
                t.require_grad()
            } else {
                t
            }
        })
    }
}

/// Replaces every float parameter of `module` with the tensor of the same path. All tensors must
/// be used and every parameter found, with matching shapes.
pub fn apply_tensors<M: Module>(module: M, tensors: Vec<NamedTensor>) -> Result<M, WeightsError> {
    let mut map: HashMap<String, NamedTensor> =
        tensors.into_iter().map(|t| (t.name.clone(), t)).collect();
    let mut loader = Loader {
        path: Vec::new(),
        tensors: &mut map,
        error: None,
    };
    let module = module.map(&mut loader);
    if let Some(e) = loader.error {
        return Err(e);
    }
    if !map.is_empty() {
        let mut names: Vec<String> = map.into_keys().collect();
        names.sort();
        return Err(WeightsError::Unexpected(names));
    }
    Ok(module)
}

/// Serialises tensors as safetensors with string metadata. Refuses non-finite values.
pub fn encode(
    tensors: &[NamedTensor],
    dtype: WeightDtype,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, WeightsError> {
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for t in tensors {
        if t.values.iter().any(|v| !v.is_finite()) {
            return Err(WeightsError::NotFinite(t.name.clone()));
        }
        let bytes = match dtype {
            WeightDtype::F32 => t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            WeightDtype::F16 => t
                .values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            WeightDtype::BF16 => t
                .values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
        };
        buffers.push((t.name.clone(), t.shape.clone(), bytes));
    }
    let st_dtype = match dtype {
        WeightDtype::F32 => Dtype::F32,
        WeightDtype::F16 => Dtype::F16,
        WeightDtype::BF16 => Dtype::BF16,
    };
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(st_dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| WeightsError::Format(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    safetensors::serialize(views, Some(meta)).map_err(|e| WeightsError::Format(e.to_string()))
}

/// Reads every tensor (f32, f16 or bf16, widened to f32) and the metadata of a safetensors file.
pub fn decode(bytes: &[u8]) -> Result<(Vec<NamedTensor>, BTreeMap<String, String>), WeightsError> {
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| WeightsError::Format(e.to_string()))?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let st = SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Format(e.to_string()))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => return Err(WeightsError::Dtype(name, format!("{other:?}"))),
        };
        if values.iter().any(|v| !v.is_finite()) {
            return Err(WeightsError::NotFinite(name));
        }
        out.push(NamedTensor {
            name,
            shape: view.shape().to_vec(),
            values,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((out, metadata))
}

/// A generator snapshot at `level` (blocks above it dropped, its configuration's resolution set
/// to the level's) with where it stood: `level`, `alpha`, `kimg`, and any `extra` entries.
pub fn snapshot_to_bytes(
    generator: &Generator,
    config: &ModelConfig,
    level: usize,
    alpha: f64,
    kimg: f64,
    dtype: WeightDtype,
    extra: &[(&str, String)],
) -> Result<Vec<u8>, WeightsError> {
    let snapshot_config = config
        .clone()
        .with_resolution(ModelConfig::level_resolution(level));
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    meta.insert("kind".to_string(), "generator".to_string());
    meta.insert(
        "config".to_string(),
        serde_json::to_string(&snapshot_config).expect("config serialises"),
    );
    meta.insert("level".to_string(), level.to_string());
    meta.insert("alpha".to_string(), alpha.to_string());
    meta.insert("kimg".to_string(), format!("{kimg:.3}"));
    for (k, v) in extra {
        meta.insert(k.to_string(), v.clone());
    }
    encode(
        &truncate_to_level(collect_tensors(generator), level),
        dtype,
        &meta,
    )
}

/// Rebuilds a generator from a file written by [`snapshot_to_bytes`], with its configuration and
/// metadata.
pub fn generator_from_bytes(
    bytes: &[u8],
    device: &Device,
) -> Result<(Generator, ModelConfig, BTreeMap<String, String>), WeightsError> {
    let (tensors, meta) = decode(bytes)?;
    let config = config_from_metadata(&meta, "generator")?;
    let skeleton = Generator::new(&config, &mut crate::rng::SplitMix64::new(0), device);
    let generator = apply_tensors(skeleton, tensors)?;
    Ok((generator, config, meta))
}

/// Checks `format` and `kind` and parses the configuration of a weight file's metadata.
pub fn config_from_metadata(
    meta: &BTreeMap<String, String>,
    kind: &str,
) -> Result<ModelConfig, WeightsError> {
    match meta.get("format") {
        Some(f) if f == FORMAT => {}
        Some(f) => {
            return Err(WeightsError::Metadata(format!(
                "format `{f}` is not `{FORMAT}`"
            )));
        }
        None => {
            return Err(WeightsError::Metadata(
                "no `format` entry: not a pggan-rs weight file".into(),
            ));
        }
    }
    match meta.get("kind") {
        Some(k) if k == kind => {}
        other => {
            return Err(WeightsError::Metadata(format!(
                "kind is {other:?}, expected `{kind}`"
            )));
        }
    }
    let json = meta
        .get("config")
        .ok_or_else(|| WeightsError::Metadata("no `config` entry".into()))?;
    let config: ModelConfig = serde_json::from_str(json)
        .map_err(|e| WeightsError::Metadata(format!("bad config: {e}")))?;
    config
        .validate()
        .map_err(|e| WeightsError::Metadata(format!("bad config: {e}")))?;
    Ok(config)
}

/// The tensors of `generator` that a generator of the lower resolution `level` has: what a stage
/// snapshot keeps (its blocks up to `level` and their toRGB layers).
pub fn truncate_to_level(tensors: Vec<NamedTensor>, level: usize) -> Vec<NamedTensor> {
    tensors
        .into_iter()
        .filter(|t| {
            let mut parts = t.name.split('.');
            match (
                parts.next(),
                parts.next().and_then(|i| i.parse::<usize>().ok()),
            ) {
                (Some("blocks"), Some(i)) => i < level,
                (Some("to_rgb"), Some(i)) => i <= level,
                _ => true,
            }
        })
        .collect()
}
