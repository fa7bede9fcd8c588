//! Adam with its state kept by parameter path, so it checkpoints into safetensors by name and a
//! resumed run continues bit for bit. (Burn's own optimiser records key the state by runtime
//! parameter ids, which do not survive a reload from our weight files.)

use std::collections::{BTreeMap, HashMap};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Gradients, Tensor};
use pggan_model::layers::tensor_from_f32;
use pggan_model::weights::NamedTensor;
use serde::{Deserialize, Serialize};

/// Adam hyper-parameters (the paper: lr 1e-3, β1 0, β2 0.99, ε 1e-8).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamParams {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// ε added to the root of the second moment.
    pub eps: f64,
}

/// Adam's state for one module: moments by parameter path and the step count.
#[derive(Debug, Default)]
pub struct Adam {
    /// Steps taken since the last reset.
    pub step: u64,
    moments: HashMap<String, (Tensor<1>, Tensor<1>)>,
}

struct Stepper<'a> {
    params: AdamParams,
    step: u64,
    grads: &'a Gradients,
    moments: &'a mut HashMap<String, (Tensor<1>, Tensor<1>)>,
    path: Vec<String>,
}

impl ModuleMapper for Stepper<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = param.val().grad(self.grads) else {
            return param; // off the loss's path this step
        };
        let dims = grad.dims();
        let n: usize = dims.iter().product();
        let g = grad.reshape([n]); // [n]
        let name = self.path.join(".");
        let p = self.params;
        let (m, v) = match self.moments.remove(&name) {
            Some((m, v)) => (m.mul_scalar(p.beta1) + g.clone().mul_scalar(1.0 - p.beta1), v.mul_scalar(p.beta2) + g.square().mul_scalar(1.0 - p.beta2)),
            None => (g.clone().mul_scalar(1.0 - p.beta1), g.square().mul_scalar(1.0 - p.beta2)),
        };
        let t = self.step as i32;
        let m_hat = m.clone().div_scalar(1.0 - p.beta1.powi(t));
        let v_hat = v.clone().div_scalar(1.0 - p.beta2.powi(t));
        let update = (m_hat / v_hat.sqrt().add_scalar(p.eps)).mul_scalar(p.lr).reshape(dims); // [dims]
        self.moments.insert(name, (m, v));
        param.map(|w| {
            // Back onto the autodiff device as a fresh leaf that keeps requiring gradients.
            let tracked = w.is_require_grad();
            let updated = Tensor::from_inner(w.inner() - update);
            if tracked { updated.require_grad() } else { updated }
        })
    }
}

impl Adam {
    /// Applies one Adam update to every parameter of `module` that has a gradient in `grads`.
    pub fn step<M: Module>(&mut self, module: M, grads: &Gradients, params: AdamParams) -> M {
        self.step += 1;
        let mut stepper = Stepper { params, step: self.step, grads, moments: &mut self.moments, path: Vec::new() };
        module.map(&mut stepper)
    }

    /// Forgets all moments (the paper resets them whenever the level changes).
    pub fn reset(&mut self) {
        self.step = 0;
        self.moments.clear();
    }

    /// The state as named tensors (`m.<param>`, `v.<param>`) under `prefix`.
    pub fn to_tensors(&self, prefix: &str) -> Vec<NamedTensor> {
        let mut names: Vec<&String> = self.moments.keys().collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let (m, v) = &self.moments[name];
            for (which, t) in [("m", m), ("v", v)] {
                out.push(NamedTensor {
                    name: format!("{prefix}{which}.{name}"),
                    shape: t.dims().to_vec(),
                    values: pggan_model::layers::tensor_to_f32(t.clone()),
                });
            }
        }
        out
    }

    /// Rebuilds the state from [`to_tensors`](Self::to_tensors) output.
    pub fn from_tensors(step: u64, prefix: &str, tensors: &BTreeMap<String, NamedTensor>, device: &Device) -> Self {
        let mut m_parts = HashMap::new();
        let mut v_parts = HashMap::new();
        for (name, t) in tensors.range(prefix.to_string()..) {
            let Some(rest) = name.strip_prefix(prefix) else { break };
            let tensor = tensor_from_f32(t.values.clone(), [t.values.len()], device);
            if let Some(p) = rest.strip_prefix("m.") {
                m_parts.insert(p.to_string(), tensor);
            } else if let Some(p) = rest.strip_prefix("v.") {
                v_parts.insert(p.to_string(), tensor);
            }
        }
        let moments: HashMap<String, (Tensor<1>, Tensor<1>)> = m_parts.into_iter().filter_map(|(k, m)| v_parts.remove(&k).map(|v| (k, (m, v)))).collect();
        // Without its moments (a compact checkpoint) Adam starts afresh, bias correction included.
        let step = if moments.is_empty() { 0 } else { step };
        Self { step, moments }
    }
}
