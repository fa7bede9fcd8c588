//! The exponential moving average of the generator's weights, used for every sample and export.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;
use pggan_model::Generator;

/// β of the EMA for one step of `minibatch` images: either a fixed β, or the half-life form
/// `0.5^(minibatch / (ema_kimg·1000))` that does not depend on the batch size.
pub fn ema_beta(fixed_beta: f64, half_life_kimg: Option<f64>, minibatch: usize) -> f64 {
    match half_life_kimg {
        Some(k) if k > 0.0 => 0.5f64.powf(minibatch as f64 / (k * 1000.0)),
        _ => fixed_beta,
    }
}

struct Gather {
    path: Vec<String>,
    out: HashMap<String, Tensor<1>>,
}

impl ModuleVisitor for Gather {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val().inner(); // plain tensor, off the autodiff graph
        let n: usize = t.dims().iter().product();
        self.out.insert(self.path.join("."), t.reshape([n]));
    }
}

struct Blend {
    path: Vec<String>,
    source: HashMap<String, Tensor<1>>,
    beta: f64,
}

impl ModuleMapper for Blend {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(src) = self.source.remove(&self.path.join(".")) else {
            return param;
        };
        let beta = self.beta;
        param.map(|ema| {
            let dims = ema.dims();
            ema.clone() + (src.reshape(dims) - ema).mul_scalar(1.0 - beta) // β·ema + (1−β)·g
        })
    }
}

/// `ema ← β·ema + (1 − β)·generator`, parameter by parameter. `ema` lives on the plain device.
pub fn update_ema(ema: Generator, generator: &Generator, beta: f64) -> Generator {
    let mut gather = Gather {
        path: Vec::new(),
        out: HashMap::new(),
    };
    generator.visit(&mut gather);
    ema.map(&mut Blend {
        path: Vec::new(),
        source: gather.out,
        beta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_life_form() {
        assert_eq!(ema_beta(0.999, None, 64), 0.999);
        // After ema_kimg thousand images the old weights count for half.
        let b = ema_beta(0.999, Some(10.0), 100);
        assert!((b.powi(100) - 0.5).abs() < 1e-12);
    }
}
