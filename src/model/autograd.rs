//! Fused kernels with a backward pass: candle's fused `rms_norm`, `softmax_last_dim` and
//! rotary embeddings have no backward, so autograd would otherwise run the composed versions
//! (a dozen element-wise ops each, every intermediate kept for the backward pass). Here the
//! forward is candle's fused kernel on a detached input, and [`attach`] hands autograd the
//! gradient formula:
//!
//! - softmax `y = softmax(x)` over the last dim: `dx = y ⊙ (g − Σ g ⊙ y)`;
//! - RMSNorm `y = w ⊙ x · r`, `r = (mean(x²) + ε)^(-1/2)` (Zhang & Sennrich 2019), `w`
//!   frozen: with `h = g ⊙ w` and `n = x · r`, `dx = r · (h − n · mean(h ⊙ n))`;
//! - RoPE is a rotation of each pair by a position's angle, so `dx` is `g` rotated back:
//!   the same kernel with `−sin`.
//!
//! candle's fused kernels lack f64, which takes the composed forward (the gradient formula
//! stays this module's, so the f64 finite-difference test checks it). Shapes follow the
//! wrapped candle ops. Tests (`tests/model.rs`) compare values and
//! gradients with the composed ops.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use std::sync::Arc;

type Backward = dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync;

/// `y` (computed without a graph) returned again, with `backward(x, y, grad_y) = grad_x`
/// as its gradient with respect to `x`.
struct Attach {
    name: &'static str,
    backward: Arc<Backward>,
}

impl Attach {
    fn copy<B: BackendStorage>(y: &B, l: &Layout) -> Result<(B, Shape)> {
        if l.start_offset() != 0 || !l.is_contiguous() {
            candle_core::bail!("attach: the fused output must be contiguous from offset 0");
        }
        Ok((y.try_clone(l)?, l.shape().clone()))
    }
}

impl CustomOp2 for Attach {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        y: &CpuStorage,
        l: &Layout,
        _x: &CpuStorage,
        _xl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Self::copy(y, l)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        y: &candle_core::CudaStorage,
        l: &Layout,
        _x: &candle_core::CudaStorage,
        _xl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        Self::copy(y, l)
    }

    fn bwd(
        &self,
        y: &Tensor,
        x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((None, Some((self.backward)(x, y, grad)?)))
    }
}

/// `y`, with autograd told that `∂L/∂x = backward(x, y, ∂L/∂y)`. `y` must have been
/// computed from `x` outside the graph (on `x.detach()`); when `x` carries no gradient, `y`
/// is returned as it is.
///
/// # Errors
/// Tensor errors.
pub fn attach(
    name: &'static str,
    x: &Tensor,
    y: Tensor,
    backward: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
) -> Result<Tensor> {
    if !x.track_op() {
        return Ok(y);
    }
    y.contiguous()?.apply_op2_arc(
        x,
        Arc::new(Box::new(Attach {
            name,
            backward: Arc::new(backward),
        })),
    )
}

/// Softmax over the last dimension (candle's fused kernel) with a backward.
///
/// # Errors
/// Tensor errors.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let xd = x.detach().contiguous()?;
    let y = if x.dtype() == DType::F64 {
        candle_nn::ops::softmax(&xd, D::Minus1)?
    } else {
        candle_nn::ops::softmax_last_dim(&xd)?
    };
    attach("softmax-last-dim", x, y, |_x, y, g| {
        let dot = (g * y)?.sum_keepdim(D::Minus1)?;
        y * g.broadcast_sub(&dot)?
    })
}

/// Attention probabilities `softmax(scale · x + mask)` over the last dimension, `mask`
/// additive and broadcastable to `x` (a constant: it gets no gradient), as one node:
/// `dx = scale · y ⊙ (g − Σ g ⊙ y)`. Saves autograd the scaled and masked copies of the
/// `[b, heads, t, t]` scores and their gradients (the mask's included, which candle would
/// compute and discard).
///
/// # Errors
/// Tensor errors.
pub fn scaled_masked_softmax(x: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let mut z = (x.detach() * scale)?;
    if let Some(m) = mask {
        z = z.broadcast_add(&m.detach())?;
    }
    let y = if x.dtype() == DType::F64 {
        candle_nn::ops::softmax(&z, D::Minus1)?
    } else {
        candle_nn::ops::softmax_last_dim(&z.contiguous()?)?
    };
    attach("scaled-masked-softmax", x, y, move |_x, y, g| {
        let dot = (g * y)?.sum_keepdim(D::Minus1)?;
        (y * g.broadcast_sub(&dot)?)? * scale
    })
}

/// RMSNorm `[.., hidden]` with a frozen weight `[hidden]` (candle's fused kernel) with a
/// backward for the input.
///
/// # Errors
/// Tensor errors.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let xd = x.detach().contiguous()?;
    let y = if x.dtype() == DType::F64 {
        candle_nn::ops::rms_norm_slow(&xd, weight, eps)?
    } else {
        candle_nn::ops::rms_norm(&xd, weight, eps)?
    };
    let w = weight.detach();
    attach("rms-norm", x, y, move |x, _y, g| {
        let x = x.detach();
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + f64::from(eps))?
            .sqrt()?
            .recip()?;
        let n = x.broadcast_mul(&r)?;
        let h = g.broadcast_mul(&w)?;
        let m = (&h * &n)?.mean_keepdim(D::Minus1)?;
        h.broadcast_sub(&n.broadcast_mul(&m)?)?.broadcast_mul(&r)
    })
}

/// Rotary embedding of `x` `[b, heads, t, head_dim]` by `cos`, `sin` `[t, head_dim / 2]`:
/// `interleaved` pairs `(2i, 2i + 1)` (candle's `rope_i`, GGUF) or halves (`rope`, Hugging
/// Face), with a backward.
///
/// # Errors
/// Tensor errors.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<Tensor> {
    let apply = move |x: &Tensor, cos: &Tensor, sin: &Tensor| match (interleaved, x.dtype()) {
        (true, DType::F64) => candle_nn::rotary_emb::rope_i_slow(x, cos, sin),
        (false, DType::F64) => candle_nn::rotary_emb::rope_slow(x, cos, sin),
        (true, _) => candle_nn::rotary_emb::rope_i(x, cos, sin),
        (false, _) => candle_nn::rotary_emb::rope(x, cos, sin),
    };
    let y = apply(&x.detach().contiguous()?, cos, sin)?;
    let (cos, neg_sin) = (cos.detach(), sin.detach().neg()?);
    attach("rope", x, y, move |_x, _y, g| {
        apply(&g.contiguous()?, &cos, &neg_sin)
    })
}
