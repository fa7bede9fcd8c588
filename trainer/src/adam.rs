//! Adam with its state kept by parameter path, so it checkpoints into safetensors by name and a
//! resumed run continues bit for bit. (Burn's own optimiser records key the state by runtime
//! parameter ids, which do not survive a reload from our weight files.)

use std::collections::{BTreeMap, HashMap};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Gradients, Tensor};
use pggan_model::tensor::tensor_from_f32;
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

/// Gradients by parameter path, each flattened to `[n]`, on the parameters' (plain) device: the
/// sum of several shards' gradients (see `step.rs`).
pub type GradMap = HashMap<String, Tensor<1>>;

/// Where a step takes each parameter's gradient from.
pub enum GradSource<'a> {
    /// A backward pass's gradients.
    Autodiff(&'a mut Gradients),
    /// Gradients already gathered by path.
    ByPath(&'a mut GradMap),
}

struct Stepper<'a> {
    params: AdamParams,
    step: u64,
    grads: GradSource<'a>,
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
        let name = self.path.join(".");
        let grad = match &mut self.grads {
            GradSource::Autodiff(grads) => param.val().grad_remove(grads).map(|grad| {
                let n: usize = grad.dims().iter().product();
                grad.reshape([n]) // [n]
            }),
            GradSource::ByPath(grads) => grads.remove(&name),
        };
        let Some(g) = grad else {
            return param; // off the loss's path this step
        };
        let moments = self.moments.remove(&name);
        let (step, params) = (self.step, self.params);
        param.map(|w| {
            // Back onto the autodiff device as a fresh leaf that keeps requiring gradients.
            let tracked = w.is_require_grad();
            let (updated, m, v) = update(w.inner(), g, moments, params, step);
            self.moments.insert(name, (m, v));
            let updated = Tensor::from_inner(updated);
            if tracked {
                updated.require_grad()
            } else {
                updated
            }
        })
    }
}

/// One Adam step of one parameter `w` (plain tensor) with gradient `g` (`[n]`) and moments
/// `(m, v)` (`[n]`; none before the first step): the updated parameter and moments.
fn update<const D: usize>(
    w: Tensor<D>,
    g: Tensor<1>,
    moments: Option<(Tensor<1>, Tensor<1>)>,
    p: AdamParams,
    step: u64,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    #[cfg(feature = "flex")]
    if pggan_model::flex_kernels::runs_on(&w.device()) && {
        let moment_dtypes = moments.iter().flat_map(|(m, v)| [m.dtype(), v.dtype()]);
        [w.dtype(), g.dtype()]
            .into_iter()
            .chain(moment_dtypes)
            .all(|d| d == burn::tensor::DType::F32)
    } {
        return fused::update(w, g, moments, p, step);
    }
    update_by_tensor_ops(w, g, moments, p, step)
}

/// [`update`] from Burn's tensor operations, for every backend.
fn update_by_tensor_ops<const D: usize>(
    w: Tensor<D>,
    g: Tensor<1>,
    moments: Option<(Tensor<1>, Tensor<1>)>,
    p: AdamParams,
    step: u64,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    let (m, v) = match moments {
        Some((m, v)) => (
            m.mul_scalar(p.beta1) + g.clone().mul_scalar(1.0 - p.beta1),
            v.mul_scalar(p.beta2) + g.square().mul_scalar(1.0 - p.beta2),
        ),
        None => (
            g.clone().mul_scalar(1.0 - p.beta1),
            g.square().mul_scalar(1.0 - p.beta2),
        ),
    };
    let t = step as i32;
    let m_hat = m.clone().div_scalar(1.0 - p.beta1.powi(t));
    let v_hat = v.clone().div_scalar(1.0 - p.beta2.powi(t));
    let dims = w.dims();
    let update = (m_hat / v_hat.sqrt().add_scalar(p.eps))
        .mul_scalar(p.lr)
        .reshape(dims); // [dims]
    (w - update, m, v)
}

/// The same step on flex as one parallel pass over the f32 data, updating the parameter and both
/// moments in place: the tensor version above makes a dozen passes and temporaries per
/// parameter (optimiser and EMA were 18% of a 4×4 step of `pggan bench`).
#[cfg(feature = "flex")]
mod fused {
    use burn::tensor::{Tensor, TensorData};
    use rayon::prelude::*;

    use super::AdamParams;

    /// Elements per parallel chunk.
    const CHUNK: usize = 1 << 14;

    /// [`super::update`] for f32 tensors on flex.
    pub fn update<const D: usize>(
        w: Tensor<D>,
        g: Tensor<1>,
        moments: Option<(Tensor<1>, Tensor<1>)>,
        p: AdamParams,
        step: u64,
    ) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
        let device = w.device();
        let n = g.dims()[0];
        // Without a copy where a tensor holds its data alone (the moments, the taken gradient).
        let (mut wd, gd) = (w.into_data(), g.into_data());
        let (mut md, mut vd) = match moments {
            Some((m, v)) => (m.into_data(), v.into_data()),
            None => (
                TensorData::zeros::<f32, _>([n]),
                TensorData::zeros::<f32, _>([n]),
            ),
        };
        let t = step as i32;
        let (b1, b2, lr, eps) = (p.beta1 as f32, p.beta2 as f32, p.lr as f32, p.eps as f32);
        let (c1, c2) = (
            (1.0 - p.beta1.powi(t)) as f32,
            (1.0 - p.beta2.powi(t)) as f32,
        );
        {
            let g = gd.as_slice::<f32>().expect("f32 gradient");
            let w = wd.as_mut_slice::<f32>().expect("f32 parameter");
            let m = md.as_mut_slice::<f32>().expect("f32 first moment");
            let v = vd.as_mut_slice::<f32>().expect("f32 second moment");
            w.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                .for_each(|((w, g), (m, v))| {
                    for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m).zip(v) {
                        *m = b1 * *m + (1.0 - b1) * g;
                        *v = b2 * *v + (1.0 - b2) * g * g;
                        *w -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                    }
                });
        }
        (
            Tensor::from_data(wd, &device),
            Tensor::from_data(md, &device),
            Tensor::from_data(vd, &device),
        )
    }
}

impl Adam {
    /// Applies one Adam update to every parameter of `module` that has a gradient in `grads`
    /// (taking those gradients out of `grads`).
    pub fn step<M: Module>(&mut self, module: M, grads: &mut Gradients, params: AdamParams) -> M {
        self.step_from(module, GradSource::Autodiff(grads), params)
    }

    /// [`Self::step`] with the gradients from `grads`.
    pub fn step_from<M: Module>(
        &mut self,
        module: M,
        grads: GradSource<'_>,
        params: AdamParams,
    ) -> M {
        self.step += 1;
        let mut stepper = Stepper {
            params,
            step: self.step,
            grads,
            moments: &mut self.moments,
            path: Vec::new(),
        };
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
                    values: pggan_model::tensor::tensor_to_f32(t.clone()),
                });
            }
        }
        out
    }

    /// Rebuilds the state from [`to_tensors`](Self::to_tensors) output.
    pub fn from_tensors(
        step: u64,
        prefix: &str,
        tensors: &BTreeMap<String, NamedTensor>,
        device: &Device,
    ) -> Self {
        let mut m_parts = HashMap::new();
        let mut v_parts = HashMap::new();
        for (name, t) in tensors.range(prefix.to_string()..) {
            let Some(rest) = name.strip_prefix(prefix) else {
                break;
            };
            let tensor = tensor_from_f32(t.values.clone(), [t.values.len()], device);
            if let Some(p) = rest.strip_prefix("m.") {
                m_parts.insert(p.to_string(), tensor);
            } else if let Some(p) = rest.strip_prefix("v.") {
                v_parts.insert(p.to_string(), tensor);
            }
        }
        let moments: HashMap<String, (Tensor<1>, Tensor<1>)> = m_parts
            .into_iter()
            .filter_map(|(k, m)| v_parts.remove(&k).map(|v| (k, (m, v))))
            .collect();
        // Without its moments (a compact checkpoint) Adam starts afresh, bias correction included.
        let step = if moments.is_empty() { 0 } else { step };
        Self { step, moments }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use pggan_model::tensor::tensor_to_f32;

    const PARAMS: AdamParams = AdamParams {
        lr: 1e-3,
        beta1: 0.0,
        beta2: 0.99,
        eps: 1e-8,
    };

    fn vector(values: &[f32]) -> Tensor<1> {
        tensor_from_f32(values.to_vec(), [values.len()], &Device::flex())
    }

    /// The first step moves every weight by the learning rate against the sign of its gradient
    /// (m̂ = g, v̂ = g²), whatever the gradient's size; a zero gradient moves nothing.
    #[test]
    fn first_step_moves_each_weight_by_the_learning_rate() {
        let w = tensor_from_f32(vec![1.0, -2.0, 0.5, 3.0], [2, 2], &Device::flex());
        let g = vector(&[0.5, -40.0, 1e-3, 0.0]);
        let (w, m, v) = update(w, g, None, PARAMS, 1);
        let w = tensor_to_f32(w);
        let expected = [1.0 - 1e-3, -2.0 + 1e-3, 0.5 - 1e-3, 3.0];
        for (a, b) in w.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{w:?} vs {expected:?}");
        }
        assert_eq!(tensor_to_f32(m), vec![0.5, -40.0, 1e-3, 0.0]);
        let v = tensor_to_f32(v);
        assert!((v[1] - 0.01 * 1600.0).abs() < 1e-3, "{v:?}");
    }

    /// The fused flex pass and Burn's tensor operations give the same parameters and moments over
    /// several steps (β1 > 0 too, so both moments matter).
    #[test]
    fn fused_pass_equals_tensor_operations() {
        let params = AdamParams {
            beta1: 0.5,
            ..PARAMS
        };
        let mut rng = pggan_model::rng::SplitMix64::new(7);
        let n = 40_000; // more than one parallel chunk
        let start = rng.normals_f32(n);
        let (mut a, mut b) = ((vector(&start), None), (vector(&start), None));
        for step in 1..=4 {
            let g = rng.normals_f32(n);
            let (w, m, v) = update(a.0, vector(&g), a.1, params, step);
            a = (w, Some((m, v)));
            let (w, m, v) = update_by_tensor_ops(b.0, vector(&g), b.1, params, step);
            b = (w, Some((m, v)));
        }
        let close = |x: Tensor<1>, y: Tensor<1>, what: &str| {
            let (x, y) = (tensor_to_f32(x), tensor_to_f32(y));
            let worst = x
                .iter()
                .zip(&y)
                .map(|(p, q)| (p - q).abs() / (1.0 + q.abs()))
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-6, "{what}: relative difference {worst}");
        };
        let ((wa, ma), (wb, mb)) = ((a.0, a.1.unwrap()), (b.0, b.1.unwrap()));
        close(wa.clone(), wb.clone(), "parameters");
        close(ma.0, mb.0, "first moment");
        close(ma.1, mb.1, "second moment");
        assert!(
            tensor_to_f32(wa).iter().zip(&start).any(|(p, q)| p != q),
            "the parameters moved"
        );
    }
}
