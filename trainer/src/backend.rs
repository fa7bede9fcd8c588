//! Choosing the compute device: a CPU backend everywhere, GPUs where the build has them.

use anyhow::{Result, bail};
use burn::tensor::Device;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// Environment variable that lets `--backend wgpu` run on a software adapter (llvmpipe, SwiftShader).
#[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
pub const ALLOW_SOFTWARE_GPU: &str = "PGGAN_ALLOW_SOFTWARE_GPU";

/// A Burn backend selectable at run time (each needs its cargo feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The fastest this build and machine have: CUDA, else a wgpu GPU (not a software renderer),
    /// else flex.
    Auto,
    /// Burn's pure-Rust CPU backend with SIMD and rayon (feature `flex`, in the default build).
    Flex,
    /// wgpu: Vulkan, Metal or DX12 (feature `wgpu`).
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
        if cfg!(feature = "wgpu") {
            v.push("wgpu");
        }
        if cfg!(feature = "cuda") {
            v.push("cuda");
        }
        v
    }

    /// What the device is, for the run's records: the adapter's own name on a GPU backend.
    pub fn adapter_name(device: &Device) -> Option<String> {
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        if let Some(identity) = device.identity() {
            return Some(identity.name);
        }
        let _ = device;
        None
    }

    /// `Auto` made concrete for this build and machine; any other kind as it is.
    pub fn resolve(self) -> BackendKind {
        if self != BackendKind::Auto {
            return self;
        }
        #[cfg(feature = "cuda")]
        if !Device::enumerate(burn::tensor::DeviceType::Cuda)
            .into_vec()
            .is_empty()
        {
            return BackendKind::Cuda;
        }
        #[cfg(feature = "wgpu")]
        if !Device::enumerate(burn::tensor::DeviceType::Wgpu)
            .into_vec()
            .is_empty()
            && Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)
                .identity()
                .is_some_and(|i| i.physical.is_some())
        {
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
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => {
                // Refuse up front rather than fail at the first tensor.
                if Device::enumerate(burn::tensor::DeviceType::Wgpu)
                    .into_vec()
                    .is_empty()
                {
                    bail!(
                        "--backend wgpu: no GPU adapter found (is a Vulkan, Metal or DX12 driver installed? on Linux, VK_ICD_FILENAMES may need to point at its ICD); use --backend flex for the CPU"
                    );
                }
                let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
                // A software rasteriser (llvmpipe, SwiftShader) is an adapter too, but no card:
                // training on it is several times slower than flex, so say so instead.
                if let Some(identity) = device.identity()
                    && identity.physical.is_none()
                    && std::env::var_os(ALLOW_SOFTWARE_GPU).is_none()
                {
                    bail!(
                        "--backend wgpu: no GPU; the best adapter found is `{}`, a software renderer on the CPU; \
                         use --backend flex (faster on a CPU), or set {ALLOW_SOFTWARE_GPU}=1 to use it anyway",
                        identity.name
                    );
                }
                Ok(device)
            }
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => {
                if Device::enumerate(burn::tensor::DeviceType::Cuda)
                    .into_vec()
                    .is_empty()
                {
                    bail!("--backend cuda: no CUDA device found; use --backend wgpu or flex");
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

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Flex => "flex",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
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
