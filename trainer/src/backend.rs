//! Choosing the compute device: a CPU backend everywhere, GPUs where the build has them.

use anyhow::{Result, bail};
use burn::tensor::Device;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// Environment variable that lets a GPU backend run on a software adapter (llvmpipe, SwiftShader).
#[cfg_attr(not(any(feature = "vulkan", feature = "wgpu")), allow(dead_code))]
pub const ALLOW_SOFTWARE_GPU: &str = "PGGAN_ALLOW_SOFTWARE_GPU";

/// Environment variable naming the folder of the GPU kernel caches (autotune results, compiled
/// kernels); `~/.cache/cubecl` when unset.
#[cfg_attr(not(feature = "gpu-speed"), allow(dead_code))]
pub const GPU_CACHE: &str = "PGGAN_GPU_CACHE";

/// Environment variable pinning the graphics API of `--backend wgpu`: `vulkan`, `metal`, `dx12` or
/// `gl` (OpenGL); unset or `auto`, wgpu chooses.
#[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
pub const WGPU_API: &str = "PGGAN_WGPU_API";

/// A Burn backend selectable at run time (each needs its cargo feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The fastest this build and machine have: CUDA, else Vulkan, else wgpu (a GPU, not a
    /// software renderer), else flex.
    Auto,
    /// Burn's pure-Rust CPU backend with SIMD and rayon (feature `flex`, in the default build).
    Flex,
    /// A GPU through Vulkan with SPIR-V kernels (feature `vulkan`): NVIDIA and AMD on Linux and
    /// Windows.
    Vulkan,
    /// A GPU through wgpu's own choice of Metal, DX12, Vulkan or OpenGL (feature `wgpu`;
    /// [`WGPU_API`] pins one), with WGSL kernels — SPIR-V on Vulkan when `vulkan` is built too.
    Wgpu,
    /// NVIDIA CUDA (feature `cuda`).
    Cuda,
}

impl BackendKind {
    /// Backends compiled into this binary.
    pub fn compiled() -> Vec<&'static str> {
        let mut v = Vec::new();
        if cfg!(feature = "flex") {
            v.push("flex");
        }
        if cfg!(feature = "vulkan") {
            v.push("vulkan");
        }
        if cfg!(feature = "wgpu") {
            v.push("wgpu");
        }
        if cfg!(feature = "cuda") {
            v.push("cuda");
        }
        v
    }

    /// What the device is, for the run's records: the adapter's own name, and whether it is a GPU
    /// or a software renderer, on a GPU backend.
    pub fn adapter_name(device: &Device) -> Option<String> {
        #[cfg(feature = "gpu-speed")]
        if let Some(identity) = device.identity() {
            let kind = if identity.physical.is_some() {
                "GPU"
            } else {
                "software renderer"
            };
            return Some(format!("{} ({kind})", identity.name));
        }
        let _ = device;
        None
    }

    /// `Auto` made concrete for this build and machine; any other kind as it is.
    pub fn resolve(self) -> BackendKind {
        if self != BackendKind::Auto {
            return self;
        }
        // Before the first device opens: looking at the adapters opens them.
        #[cfg(feature = "gpu-speed")]
        keep_gpu_caches();
        #[cfg(feature = "cuda")]
        if !Device::enumerate(burn::tensor::DeviceType::Cuda)
            .into_vec()
            .is_empty()
        {
            return BackendKind::Cuda;
        }
        #[cfg(feature = "vulkan")]
        if hardware_adapter(burn::tensor::DeviceType::Vulkan, || {
            Device::vulkan(burn::tensor::DeviceKind::DefaultDevice)
        }) {
            return BackendKind::Vulkan;
        }
        #[cfg(feature = "wgpu")]
        if hardware_adapter(burn::tensor::DeviceType::Wgpu, || {
            Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)
        }) {
            return BackendKind::Wgpu;
        }
        BackendKind::Flex
    }

    /// The device of this backend (without autodiff).
    pub fn device(self) -> Result<Device> {
        match self {
            BackendKind::Auto => self.resolve().device(),
            #[cfg(feature = "flex")]
            BackendKind::Flex => Ok(Device::flex()),
            #[cfg(feature = "vulkan")]
            BackendKind::Vulkan => gpu_device(self, burn::tensor::DeviceType::Vulkan, || {
                Device::vulkan(burn::tensor::DeviceKind::DefaultDevice)
            }),
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => {
                let api = wgpu_api()?;
                gpu_device(self, burn::tensor::DeviceType::Wgpu, || {
                    Device::new(burn::cubecl::wgpu::WgpuDevice::default().on(api))
                })
            }
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => {
                keep_gpu_caches();
                if Device::enumerate(burn::tensor::DeviceType::Cuda)
                    .into_vec()
                    .is_empty()
                {
                    bail!(
                        "--backend cuda: no CUDA device found; use --backend vulkan, wgpu or flex"
                    );
                }
                Ok(Device::cuda(0))
            }
            #[allow(unreachable_patterns)]
            other => bail!(
                "backend `{}` is not compiled into this binary (it has: {}); rebuild with `--features {}`",
                other.name(),
                Self::compiled().join(", "),
                other.name()
            ),
        }
    }

    /// `count` devices of this backend for data-parallel training, the first being
    /// [`Self::device`]'s: on a GPU backend the first `count` adapters it lists (refused when it
    /// has fewer); on the CPU backend the one CPU `count` times (the shards take turns).
    pub fn devices(self, count: usize) -> Result<Vec<Device>> {
        let first = self.device()?;
        if count <= 1 {
            return Ok(vec![first]);
        }
        match self.resolve() {
            BackendKind::Flex => Ok(vec![first; count]),
            #[cfg(feature = "vulkan")]
            BackendKind::Vulkan => {
                gpu_devices(self, burn::tensor::DeviceType::Vulkan, first, count)
            }
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => gpu_devices(self, burn::tensor::DeviceType::Wgpu, first, count),
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => gpu_devices(self, burn::tensor::DeviceType::Cuda, first, count),
            other => bail!("--devices: backend `{}` is not compiled in", other.name()),
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Flex => "flex",
            BackendKind::Vulkan => "vulkan",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }
}

/// `count` adapters of `device_type` for `backend`, `first` first, then the others in the order
/// listed; refused when it has fewer.
#[cfg(any(feature = "vulkan", feature = "wgpu", feature = "cuda"))]
fn gpu_devices(
    backend: BackendKind,
    device_type: burn::tensor::DeviceType,
    first: Device,
    count: usize,
) -> Result<Vec<Device>> {
    let mut all: Vec<Device> = Device::enumerate(device_type).into_vec();
    if all.len() < count {
        bail!(
            "--devices {count}: backend `{}` has {} device(s) here",
            backend.resolve().name(),
            all.len()
        );
    }
    all.retain(|d| *d != first);
    Ok(std::iter::once(first).chain(all).take(count).collect())
}

/// Whether `device_type` has an adapter that is a real GPU (not a software renderer).
#[cfg(any(feature = "vulkan", feature = "wgpu"))]
fn hardware_adapter(device_type: burn::tensor::DeviceType, open: impl Fn() -> Device) -> bool {
    !Device::enumerate(device_type).into_vec().is_empty()
        && open().identity().is_some_and(|i| i.physical.is_some())
}

/// A wgpu device (Vulkan or wgpu's choice of API), refused up front when there is no adapter, or
/// only a software renderer (unless [`ALLOW_SOFTWARE_GPU`] is set).
#[cfg(any(feature = "vulkan", feature = "wgpu"))]
fn gpu_device(
    kind: BackendKind,
    device_type: burn::tensor::DeviceType,
    open: impl Fn() -> Device,
) -> Result<Device> {
    keep_gpu_caches();
    let name = kind.name();
    if Device::enumerate(device_type).into_vec().is_empty() {
        bail!(
            "--backend {name}: no GPU adapter found (is a {} driver installed? on Linux, VK_ICD_FILENAMES may need to point at its ICD); use --backend flex for the CPU",
            if kind == BackendKind::Vulkan {
                "Vulkan"
            } else {
                "Vulkan, Metal or DX12"
            }
        );
    }
    let device = open();
    // A software rasteriser (llvmpipe, SwiftShader) is an adapter too, but no card: training on
    // it is several times slower than flex, so say so instead.
    if let Some(identity) = device.identity()
        && identity.physical.is_none()
        && std::env::var_os(ALLOW_SOFTWARE_GPU).is_none()
    {
        bail!(
            "--backend {name}: no GPU; the best adapter found is `{}`, a software renderer on the CPU; \
             use --backend flex (faster on a CPU), or set {ALLOW_SOFTWARE_GPU}=1 to use it anyway",
            identity.name
        );
    }
    Ok(device)
}

/// The graphics API `--backend wgpu` runs on: [`WGPU_API`], else wgpu's choice.
#[cfg(feature = "wgpu")]
pub fn wgpu_api() -> Result<burn::cubecl::wgpu::WgpuBackend> {
    use burn::cubecl::wgpu::WgpuBackend;
    let asked = std::env::var(WGPU_API).unwrap_or_default();
    Ok(match asked.to_ascii_lowercase().as_str() {
        "" | "auto" => WgpuBackend::Auto,
        "vulkan" => WgpuBackend::Vulkan,
        "metal" => WgpuBackend::Metal,
        "dx12" => WgpuBackend::Dx12,
        "gl" | "opengl" => WgpuBackend::Gl,
        other => {
            bail!("{WGPU_API}={other} is not a graphics API: use vulkan, metal, dx12, gl or auto")
        }
    })
}

/// Keeps CubeCL's caches (autotune results, compiled kernels) in one folder per user, so the
/// second run on a machine does not tune again wherever it is started from: [`GPU_CACHE`], else
/// `~/.cache/cubecl`. A `cubecl.toml` that names another place wins. Call before the first GPU
/// device opens; later calls change nothing.
#[cfg(feature = "gpu-speed")]
pub fn keep_gpu_caches() {
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, cache::CacheConfig};
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    if matches!(config.environment.path, CacheConfig::Target) {
        config.environment.path = match std::env::var_os(GPU_CACHE) {
            Some(dir) => CacheConfig::Directory(dir.into()),
            None => CacheConfig::Global,
        };
    }
    // Already set (a second device in one process): the first choice stands.
    let _ = CubeClRuntimeConfig::try_set(config);
}

/// Gives Mesa's EGL a runtime folder on a machine without a login session (a server, a
/// container, CI), where `XDG_RUNTIME_DIR` is unset and every adapter probe otherwise prints
/// "error: XDG_RUNTIME_DIR is invalid or not set in the environment": a private folder of this
/// user's under the temporary folder, as `pam_systemd` would make. Runs first in `main`, before
/// any other thread; an existing setting is kept.
pub fn private_runtime_dir() {
    #[cfg(all(target_os = "linux", feature = "wgpu"))]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
            return;
        }
        // The process's own entry in /proc belongs to its user.
        let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
            return;
        };
        let dir = std::env::temp_dir().join(format!("pggan-runtime-{uid}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        let private = std::fs::symlink_metadata(&dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o777 == 0o700);
        if private {
            // SAFETY: called first in `main`, before any other thread exists.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_resolves_to_a_compiled_backend() {
        let chosen = BackendKind::Auto.resolve();
        assert_ne!(chosen, BackendKind::Auto);
        assert!(
            BackendKind::compiled().contains(&chosen.name()),
            "{chosen:?}"
        );
        // A build without GPU features has only the CPU to choose.
        if !cfg!(any(feature = "wgpu", feature = "cuda")) {
            assert_eq!(chosen, BackendKind::Flex);
        }
        // A GPU backend is chosen only for a real card, never for a software renderer.
        #[cfg(feature = "gpu-speed")]
        if chosen != BackendKind::Flex {
            let identity = chosen.device().unwrap().identity().unwrap();
            assert!(identity.physical.is_some(), "{}", identity.name);
        }
        // A backend left out of the build is refused, naming the feature to build with.
        if !cfg!(feature = "cuda") {
            let err = BackendKind::Cuda.device().unwrap_err().to_string();
            assert!(
                err.contains("not compiled") && err.contains("--features cuda"),
                "{err}"
            );
        }
    }
}
