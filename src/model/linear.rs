//! A linear projection whose weight is a float tensor or a quantized GGUF tensor, with a slot
//! where an adapter (LoRA) adds its output.

use candle_core::quantized::QMatMul;
use candle_core::{Module, Result, Tensor};
use std::sync::Arc;

/// Something added to a projection's output: `y = base(x) + adapter(x)`. LoRA (Hu et al.,
/// 2021) is one: `adapter(x) = scale * B(A(dropout(x)))`.
pub trait Adapter: Send + Sync + std::fmt::Debug {
    /// The adapter's contribution for input `x` (`[.., in_features]` →
    /// `[.., out_features]`).
    ///
    /// # Errors
    /// Any tensor error.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
}

/// The frozen base weight of a projection.
#[derive(Debug, Clone)]
pub enum BaseWeight {
    /// A float matrix `[out_features, in_features]` (f32, f16 or bf16).
    Float(candle_nn::Linear),
    /// A GGUF tensor multiplied by candle's quantized kernels.
    Quantized(Arc<QMatMul>),
    /// A Q4_1 GGUF tensor multiplied by this crate's AVX2 kernel (CPU only).
    Q4_1(Arc<crate::model::q4_1::Q4_1Matrix>),
}

/// One projection of the model (`q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`,
/// `up_proj`, `down_proj`, or the output head).
#[derive(Debug, Clone)]
pub struct Linear {
    base: BaseWeight,
    in_features: usize,
    out_features: usize,
    adapter: Option<Arc<dyn Adapter>>,
}

impl Linear {
    /// A projection with a float weight `[out_features, in_features]` and no bias.
    pub fn from_weight(weight: Tensor) -> Result<Linear> {
        let (out_features, in_features) = weight.dims2()?;
        Ok(Linear {
            base: BaseWeight::Float(candle_nn::Linear::new(weight, None)),
            in_features,
            out_features,
            adapter: None,
        })
    }

    /// A projection with a quantized weight of shape `[out_features, in_features]`.
    pub fn from_qmatmul(q: QMatMul, out_features: usize, in_features: usize) -> Linear {
        Linear {
            base: BaseWeight::Quantized(Arc::new(q)),
            in_features,
            out_features,
            adapter: None,
        }
    }

    /// A projection with a Q4_1 weight multiplied by [`crate::model::q4_1`]'s kernel.
    pub fn from_q4_1(m: crate::model::q4_1::Q4_1Matrix) -> Linear {
        Linear {
            in_features: m.in_features(),
            out_features: m.out_features(),
            base: BaseWeight::Q4_1(Arc::new(m)),
            adapter: None,
        }
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// The frozen base weight.
    pub fn base(&self) -> &BaseWeight {
        &self.base
    }

    /// Attaches (or, with `None`, removes) an adapter.
    pub fn set_adapter(&mut self, adapter: Option<Arc<dyn Adapter>>) {
        self.adapter = adapter;
    }

    /// The attached adapter.
    pub fn adapter(&self) -> Option<&Arc<dyn Adapter>> {
        self.adapter.as_ref()
    }

    /// `x` `[.., in_features]` → `[.., out_features]`: base output plus the adapter's.
    ///
    /// # Errors
    /// Shape or dtype mismatch.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.base {
            BaseWeight::Float(l) => l.forward(x)?,
            BaseWeight::Quantized(q) => q.forward(x)?,
            BaseWeight::Q4_1(m) => x.contiguous()?.apply_op1_no_bwd(m.as_ref())?,
        };
        match &self.adapter {
            Some(a) => y + a.forward(x)?,
            None => Ok(y),
        }
    }
}
