//! A linear projection whose weight is a float tensor or a quantized GGUF tensor, with a slot
//! where an adapter (LoRA) adds its output.

use candle_core::backend::BackendStorage;
use candle_core::quantized::QMatMul;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp3, Layout, Module, Result, Shape, Storage, Tensor,
};
use std::sync::Arc;

/// `x W^T` for a frozen weight `W` `[out, in]`, as a custom op whose backward returns the
/// input's gradient `g W` only. candle's own matmul backward also computes `x^T g` for the
/// weight (and keeps a zero-initialised gradient buffer for it) even when the weight is not a
/// variable: for LoRA, where every base weight is frozen, that is about half the backward
/// pass's work (the 49152 x 576 tied output head of SmolLM2 included) and a weight-sized
/// buffer per projection, all thrown away.
///
/// The forward is [`super::gemm512`] for f32 on a CPU with AVX-512 and at least 16 rows, else
/// candle's own backend matmul on the same storage, for an input that is contiguous.
#[derive(Debug)]
struct FrozenMatmul {
    /// `[out, in]`.
    weight: Tensor,
}

impl FrozenMatmul {
    /// `x` `[.., in]` (contiguous, layout `l`) times `W^T` on backend storage `B`.
    fn fwd<B: BackendStorage>(&self, x: &B, l: &Layout, w: &B, wl: &Layout) -> Result<(B, Shape)> {
        let dims = l.shape().dims();
        let k = dims.last().copied().unwrap_or(1);
        let m = l.shape().elem_count() / k.max(1);
        let (out, inp) = self.weight.dims2()?;
        if inp != k || !l.is_contiguous() || !wl.is_contiguous() {
            candle_core::bail!(
                "frozen linear: input {:?} (contiguous: {}) does not fit weight [{out}, {inp}]",
                dims,
                l.is_contiguous()
            );
        }
        let lhs = Layout::contiguous_with_offset((1, m, k), l.start_offset());
        let rhs = Layout::contiguous_with_offset((1, out, k), wl.start_offset()).transpose(1, 2)?;
        let y = x.matmul(w, (1, m, out, k), &lhs, &rhs)?;
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = out;
        }
        Ok((y, Shape::from(shape)))
    }
}

/// Below this many rows, candle's matmul (a matrix-vector product is memory-bound anyway).
const AVX512_MIN_ROWS: usize = 16;

impl FrozenMatmul {
    /// [`super::gemm512`] on f32 storage, for `m >= AVX512_MIN_ROWS` rows on a CPU with
    /// AVX-512; `None` to use candle's matmul.
    fn fwd_avx512(
        &self,
        x: &[f32],
        l: &Layout,
        w: &[f32],
        wl: &Layout,
    ) -> Result<Option<(CpuStorage, Shape)>> {
        let dims = l.shape().dims();
        let k = dims.last().copied().unwrap_or(1);
        let m = l.shape().elem_count() / k.max(1);
        let (out, inp) = self.weight.dims2()?;
        let (Some((xs, xe)), Some((ws, we))) = (l.contiguous_offsets(), wl.contiguous_offsets())
        else {
            return Ok(None);
        };
        if m < AVX512_MIN_ROWS || inp != k {
            return Ok(None);
        }
        let Some(y) = super::gemm512::matmul_nt(&x[xs..xe], &w[ws..we], m, out, k) else {
            return Ok(None);
        };
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = out;
        }
        Ok(Some((CpuStorage::F32(y), Shape::from(shape))))
    }
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (storage, wl) = self.weight.storage_and_layout();
        let Storage::Cpu(w) = &*storage else {
            candle_core::bail!("frozen linear: the weight is not on the CPU");
        };
        if let (CpuStorage::F32(xs), CpuStorage::F32(ws)) = (x, w) {
            if let Some(done) = self.fwd_avx512(xs, l, ws, wl)? {
                return Ok(done);
            }
        }
        self.fwd(x, l, w, wl)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (storage, wl) = self.weight.storage_and_layout();
        match &*storage {
            Storage::Cuda(w) => self.fwd(x, l, w, wl),
            _ => candle_core::bail!("frozen linear: the weight is not on the GPU"),
        }
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dims = grad.dims();
        let out = dims.last().copied().unwrap_or(1);
        let rows = grad.elem_count() / out.max(1);
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = self.weight.dim(1)?;
        }
        if let Some(dx) = self.bwd_avx512(grad, rows)? {
            return Ok(Some(Tensor::from_vec(dx, shape, grad.device())?));
        }
        let dx = grad.reshape((rows, out))?.matmul(&self.weight)?;
        Ok(Some(dx.reshape(shape)?))
    }
}

impl FrozenMatmul {
    /// The input gradient `g W` (`g` `[rows, out]`, `W` `[out, in]`) through
    /// [`super::gemm512::matmul_nn`], for f32 on a CPU with AVX-512 and at least 16 rows;
    /// `None` to use candle's matmul. The training backward's largest products (every
    /// projection's and the output head's, whose `W` is `[49152, 576]` for SmolLM2) run at
    /// AVX-512 width instead of candle's AVX2 microkernels.
    fn bwd_avx512(&self, grad: &Tensor, rows: usize) -> Result<Option<Vec<f32>>> {
        let usable = grad.device().is_cpu()
            && grad.dtype() == candle_core::DType::F32
            && self.weight.dtype() == candle_core::DType::F32
            && rows >= AVX512_MIN_ROWS
            && super::gemm512::available();
        if !usable {
            return Ok(None);
        }
        let (out, inp) = self.weight.dims2()?;
        let grad = grad.contiguous()?;
        let (gs, gl) = grad.storage_and_layout();
        let (ws, wl) = self.weight.storage_and_layout();
        let (
            Storage::Cpu(CpuStorage::F32(g)),
            Storage::Cpu(CpuStorage::F32(w)),
            Some((ga, gb)),
            Some((wa, wb)),
        ) = (&*gs, &*ws, gl.contiguous_offsets(), wl.contiguous_offsets())
        else {
            return Ok(None);
        };
        Ok(super::gemm512::matmul_nn(
            &g[ga..gb],
            &w[wa..wb],
            rows,
            inp,
            out,
        ))
    }
}

/// Something added to a projection's output: `y = base(x) + adapter(x)`. LoRA (Hu et al.,
/// 2021) is one: `adapter(x) = scale * B(A(dropout(x)))`.
pub trait Adapter: Send + Sync + std::fmt::Debug {
    /// The adapter's contribution for input `x` (`[.., in_features]` →
    /// `[.., out_features]`).
    ///
    /// # Errors
    /// Any tensor error.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// The adapter as `scale · u B^T`, `u` computed from `x` now, for the fused training
    /// forward of [`Linear::forward`]; `None` (the default) for an adapter of no such form.
    ///
    /// # Errors
    /// Any tensor error.
    fn low_rank(&self, _x: &Tensor) -> Result<Option<LowRank>> {
        Ok(None)
    }
}

/// A low-rank adapter's output `scale · u B^T` in pieces: LoRA's `u = dropout(x) A^T`.
#[derive(Debug)]
pub struct LowRank {
    /// `[.., r]`, carrying gradients to `A` (and through the dropout to `x`).
    pub u: Tensor,
    /// `lora_B` `[out, r]`.
    pub b: Tensor,
    /// The factor `lora_alpha / r` (or `/ √r`).
    pub scale: f64,
}

/// `x W^T + scale · u B^T` as one op, for training with a frozen f32 weight `W` `[out, in]`
/// on a CPU with AVX-512: both products through [`super::gemm512`], and the graph keeps only
/// `x`, `u` and `B`, where the composed ops (`u B^T`, its scaled copy, the base output and the
/// sum) kept four `[tokens, out]` tensors per adapted projection until the backward (PyTorch
/// keeps none of them either: an addition saves no input). The backward: `dx = g W` (as
/// [`FrozenMatmul`]), `du = scale · g B`, `dB = scale · g^T u`.
#[derive(Debug)]
struct LowRankLinear {
    /// `[out, in]`.
    weight: Tensor,
    scale: f64,
}

impl CustomOp3 for LowRankLinear {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        u: &CpuStorage,
        ul: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (ws, wl) = self.weight.storage_and_layout();
        let Storage::Cpu(w) = &*ws else {
            candle_core::bail!("lora linear: the weight is not on the CPU");
        };
        let (x, u, b, w) = (
            super::f32_slice(x, xl, "lora linear: the input")?,
            super::f32_slice(u, ul, "lora linear: A's output")?,
            super::f32_slice(b, bl, "lora linear: lora_B")?,
            super::f32_slice(w, wl, "lora linear: the weight")?,
        );
        let (out, k) = self.weight.dims2()?;
        let r = bl.dims().get(1).copied().unwrap_or(0);
        let m = x.len() / k.max(1);
        if x.len() != m * k || u.len() != m * r || b.len() != out * r {
            candle_core::bail!(
                "lora linear: input {:?}, A's output {:?}, lora_B {:?} do not fit [{out}, {k}]",
                xl.dims(),
                ul.dims(),
                bl.dims()
            );
        }
        let scaled: Vec<f32> = u.iter().map(|v| v * self.scale as f32).collect();
        let (Some(mut y), Some(low)) = (
            super::gemm512::matmul_nt(x, w, m, out, k),
            super::gemm512::matmul_nt(&scaled, b, m, out, r),
        ) else {
            candle_core::bail!("lora linear: this CPU has no AVX-512");
        };
        for (y, l) in y.iter_mut().zip(&low) {
            *y += l;
        }
        let mut shape = xl.dims().to_vec();
        if let Some(last) = shape.last_mut() {
            *last = out;
        }
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        u: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let frozen = FrozenMatmul {
            weight: self.weight.clone(),
        };
        let dx = CustomOp1::bwd(&frozen, x, res, grad)?;
        let out = self.weight.dim(0)?;
        let r = b.dim(1)?;
        let rows = grad.elem_count() / out.max(1);
        // Detached: a gradient computed from tensors that carry a graph would carry it on,
        // and the optimizer's moments would keep every step's graph alive.
        let g = grad.detach().reshape((rows, out))?;
        let du = (g.matmul(&b.detach())? * self.scale)?.reshape(u.shape())?;
        let db = (g.t()?.matmul(&u.detach().reshape((rows, r))?)? * self.scale)?;
        Ok((dx, Some(du), Some(db)))
    }
}

/// The frozen base weight of a projection.
#[derive(Debug, Clone)]
pub enum BaseWeight {
    /// A float matrix `[out_features, in_features]` (f32, f16 or bf16).
    Float(candle_nn::Linear),
    /// A GGUF tensor multiplied by candle's quantized kernels.
    Quantized(Arc<QMatMul>),
    /// A Q4_1 GGUF tensor multiplied by [`crate::model::q4_1`]'s kernels (CPU only).
    Q4_1(Arc<crate::model::q4_1::Q4_1Matrix>),
    /// A Q8_0 GGUF tensor multiplied by [`crate::model::q8_0`]'s AVX-512 VNNI kernel (CPU
    /// only).
    Q8_0(Arc<crate::model::q8_0::Q8_0Matrix>),
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

    /// A projection with a Q8_0 weight multiplied by [`crate::model::q8_0`]'s kernel.
    pub fn from_q8_0(m: crate::model::q8_0::Q8_0Matrix) -> Linear {
        Linear {
            in_features: m.in_features(),
            out_features: m.out_features(),
            base: BaseWeight::Q8_0(Arc::new(m)),
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

    /// Several projections of one input, as [`Linear::forward`] each: `x` `[.., in]` →
    /// one `[.., out_features]` per projection. For inference on a CPU with AVX-512 where
    /// every base weight is f32, the products run as one [`super::gemm512::matmul_nt_many`]
    /// (the input packed once, one pass of the thread pool); otherwise one by one.
    ///
    /// # Errors
    /// Shape or dtype mismatch.
    pub fn forward_shared(linears: &[&Linear], x: &Tensor) -> Result<Vec<Tensor>> {
        Self::shared(linears, x, true)
    }

    /// As [`Linear::forward_shared`], the base weights only: every adapter left out.
    ///
    /// # Errors
    /// Shape or dtype mismatch.
    pub fn forward_shared_base(linears: &[&Linear], x: &Tensor) -> Result<Vec<Tensor>> {
        Self::shared(linears, x, false)
    }

    fn shared(linears: &[&Linear], x: &Tensor, adapters: bool) -> Result<Vec<Tensor>> {
        let k = x.dims().last().copied().unwrap_or(1);
        let rows = x.elem_count() / k.max(1);
        let weights: Option<Vec<&Tensor>> = linears
            .iter()
            .map(|l| match &l.base {
                BaseWeight::Float(f)
                    if l.in_features == k
                        && f.weight().dtype() == candle_core::DType::F32
                        && f.weight().device().is_cpu()
                        && f.weight().is_contiguous() =>
                {
                    Some(f.weight())
                }
                _ => None,
            })
            .collect();
        let shared = !x.track_op()
            && x.device().is_cpu()
            && x.dtype() == candle_core::DType::F32
            && rows >= AVX512_MIN_ROWS
            && super::gemm512::available();
        let (Some(weights), true) = (weights, shared) else {
            return linears
                .iter()
                .map(|l| {
                    if adapters {
                        l.forward(x)
                    } else {
                        l.forward_base(x)
                    }
                })
                .collect();
        };
        let x = x.contiguous()?;
        let ys = {
            let (xs, xl) = x.storage_and_layout();
            let (Storage::Cpu(CpuStorage::F32(xv)), Some((xa, xb))) =
                (&*xs, xl.contiguous_offsets())
            else {
                candle_core::bail!("shared projections: the input is not contiguous f32");
            };
            let guards: Vec<_> = weights.iter().map(|w| w.storage_and_layout()).collect();
            let mut slices = Vec::with_capacity(guards.len());
            for (g, l) in &guards {
                let (Storage::Cpu(CpuStorage::F32(w)), Some((a, b))) =
                    (&**g, l.contiguous_offsets())
                else {
                    candle_core::bail!("shared projections: a weight is not contiguous f32");
                };
                slices.push((&w[a..b], l.dims()[0]));
            }
            super::gemm512::matmul_nt_many(&xv[xa..xb], &slices, rows, k)
                .ok_or_else(|| candle_core::Error::Msg("shared projections: no AVX-512".into()))?
        };
        let mut out = Vec::with_capacity(linears.len());
        for (l, y) in linears.iter().zip(ys) {
            let mut shape = x.dims().to_vec();
            if let Some(last) = shape.last_mut() {
                *last = l.out_features;
            }
            let y = Tensor::from_vec(y, shape, x.device())?;
            out.push(match &l.adapter {
                Some(a) if adapters => (y + a.forward(&x)?)?,
                _ => y,
            });
        }
        Ok(out)
    }

    /// `x` `[.., in_features]` → `[.., out_features]`: base output plus the adapter's.
    ///
    /// # Errors
    /// Shape or dtype mismatch.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let (Some(a), BaseWeight::Float(l)) = (&self.adapter, &self.base) {
            let w = l.weight();
            let fused = x.track_op()
                && x.device().is_cpu()
                && x.dtype() == candle_core::DType::F32
                && w.dtype() == candle_core::DType::F32
                && x.elem_count() / self.in_features.max(1) >= AVX512_MIN_ROWS
                && super::gemm512::available();
            if fused {
                if let Some(lr) = a.low_rank(x)? {
                    if lr.b.dtype() == candle_core::DType::F32 {
                        let op = LowRankLinear {
                            weight: w.contiguous()?,
                            scale: lr.scale,
                        };
                        return x.contiguous()?.apply_op3(
                            &lr.u.contiguous()?,
                            &lr.b.contiguous()?,
                            op,
                        );
                    }
                }
            }
        }
        let y = self.forward_base(x)?;
        match &self.adapter {
            Some(a) => y + a.forward(x)?,
            None => Ok(y),
        }
    }

    /// The base weight's output alone, `x` `[.., in_features]` → `[.., out_features]`.
    ///
    /// # Errors
    /// Shape or dtype mismatch.
    pub fn forward_base(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match &self.base {
            // Training: the input carries gradients, the weight never does.
            BaseWeight::Float(l) if x.track_op() => x.contiguous()?.apply_op1(FrozenMatmul {
                weight: l.weight().clone(),
            })?,
            // Inference on a CPU with AVX-512: the same op, whose forward is gemm512.
            BaseWeight::Float(l)
                if x.device().is_cpu()
                    && x.dtype() == candle_core::DType::F32
                    && x.elem_count() / self.in_features().max(1) >= AVX512_MIN_ROWS
                    && super::gemm512::available() =>
            {
                x.contiguous()?.apply_op1_no_bwd(&FrozenMatmul {
                    weight: l.weight().clone(),
                })?
            }
            BaseWeight::Float(l) => l.forward(x)?,
            BaseWeight::Quantized(q) => q.forward(x)?,
            BaseWeight::Q4_1(m) => x.contiguous()?.apply_op1_no_bwd(m.as_ref())?,
            BaseWeight::Q8_0(m) => x.contiguous()?.apply_op1_no_bwd(m.as_ref())?,
        })
    }

    /// Whether `other` multiplies by the very same base weight (one tensor or quantized
    /// matrix in memory, as a model and its adapters' clones share), whatever their adapters.
    pub fn shares_base(&self, other: &Linear) -> bool {
        match (&self.base, &other.base) {
            (BaseWeight::Float(a), BaseWeight::Float(b)) => a.weight().id() == b.weight().id(),
            (BaseWeight::Quantized(a), BaseWeight::Quantized(b)) => Arc::ptr_eq(a, b),
            (BaseWeight::Q4_1(a), BaseWeight::Q4_1(b)) => Arc::ptr_eq(a, b),
            (BaseWeight::Q8_0(a), BaseWeight::Q8_0(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// `y` (the base outputs of this projection for `x`'s rows, `[n, .., out_features]`)
    /// plus, for each row `j`, the adapter of `rows[j]` (the same projection of another
    /// model sharing this base weight; `None` for none) on that row. Rows that share an
    /// adapter run through it together; when every row has the same one, this is
    /// [`Linear::forward`]'s sum exactly.
    ///
    /// # Errors
    /// Shape mismatch; `rows` not one per row of `x`.
    pub fn add_row_adapters(y: Tensor, x: &Tensor, rows: &[&Linear]) -> Result<Tensor> {
        if rows.len() != x.dim(0)? {
            candle_core::bail!("{} row adapters for {} rows", rows.len(), x.dim(0)?);
        }
        let same = |a: Option<&Arc<dyn Adapter>>, b: Option<&Arc<dyn Adapter>>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        let mut groups: Vec<(&Arc<dyn Adapter>, Vec<u32>)> = Vec::new();
        for (j, l) in rows.iter().enumerate() {
            let Some(a) = l.adapter() else { continue };
            match groups.iter_mut().find(|(g, _)| same(Some(g), Some(a))) {
                Some((_, members)) => members.push(j as u32),
                None => groups.push((a, vec![j as u32])),
            }
        }
        if let [(a, members)] = groups.as_slice() {
            if members.len() == rows.len() {
                return y + a.forward(x)?;
            }
        }
        let mut y = y;
        for (a, members) in groups {
            let index = Tensor::new(members.as_slice(), x.device())?;
            let delta = a.forward(&x.index_select(&index, 0)?)?;
            y = y.index_add(&index, &delta, 0)?;
        }
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// `x M^T` for a fixed `M`: an adapter whose output is easy to recompute.
    #[derive(Debug)]
    struct Fixed(Tensor);

    impl Adapter for Fixed {
        fn forward(&self, x: &Tensor) -> Result<Tensor> {
            x.broadcast_matmul(&self.0.t()?)
        }
    }

    /// `scale · x A^T B^T` with trainable `A` `[r, in]` and `B` `[out, r]`: LoRA without
    /// dropout, offering the fused path its pieces.
    #[derive(Debug)]
    struct LowRankTest {
        a: candle_core::Var,
        b: candle_core::Var,
        scale: f64,
    }

    impl Adapter for LowRankTest {
        fn forward(&self, x: &Tensor) -> Result<Tensor> {
            x.broadcast_matmul(&self.a.t()?)?
                .broadcast_matmul(&self.b.t()?)?
                * self.scale
        }

        fn low_rank(&self, x: &Tensor) -> Result<Option<LowRank>> {
            Ok(Some(LowRank {
                u: x.broadcast_matmul(&self.a.t()?)?,
                b: self.b.as_tensor().clone(),
                scale: self.scale,
            }))
        }
    }

    /// The fused LoRA forward (where this CPU has AVX-512) gives the composed ops' output
    /// and the same gradients for the input, `A` and `B`.
    #[test]
    fn the_fused_lora_linear_matches_the_composed_ops() -> Result<()> {
        let (m, k, out, r) = (40, 24, 36, 4);
        let w = random(&[out, k], 11)?;
        let adapter = Arc::new(LowRankTest {
            a: candle_core::Var::from_tensor(&random(&[r, k], 12)?)?,
            b: candle_core::Var::from_tensor(&random(&[out, r], 13)?)?,
            scale: 2.5,
        });
        let mut l = Linear::from_weight(w.clone())?;
        l.set_adapter(Some(adapter.clone()));
        let x = candle_core::Var::from_tensor(&random(&[2, m / 2, k], 14)?)?;
        let y = l.forward(x.as_tensor())?;
        let composed =
            (x.as_tensor().broadcast_matmul(&w.t()?)? + adapter.forward(x.as_tensor())?)?;
        let close = |a: &Tensor, b: &Tensor, what: &str| -> Result<()> {
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let size = b.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                diff <= 1e-5 * size.max(1.0),
                "{what}: {diff} (largest {size})"
            );
            Ok(())
        };
        close(&y, &composed, "output")?;
        let probe = random(&[2, m / 2, out], 15)?;
        let fused = (&y * &probe)?.sum_all()?.backward()?;
        let plain = (&composed * &probe)?.sum_all()?.backward()?;
        for (var, what) in [
            (x.as_tensor(), "dx"),
            (adapter.a.as_tensor(), "dA"),
            (adapter.b.as_tensor(), "dB"),
        ] {
            close(
                fused.get(var).expect("fused gradient"),
                plain.get(var).expect("composed gradient"),
                what,
            )?;
        }
        // The gradient of lora_B carries no graph (the optimizer's moments would keep it).
        assert!(!fused.get(adapter.b.as_tensor()).expect("dB").track_op());
        Ok(())
    }

    fn random(shape: &[usize], seed: u64) -> Result<Tensor> {
        let n = shape.iter().product();
        Tensor::from_vec(
            crate::rng::XorShift64Star::new(seed).uniform(n, 1.0),
            shape,
            &Device::Cpu,
        )
    }

    #[test]
    fn the_input_gradient_is_g_times_w_on_every_path() -> Result<()> {
        let l = Linear::from_weight(random(&[48, 32], 6)?)?;
        let BaseWeight::Float(f) = l.base() else {
            unreachable!("a float weight")
        };
        // Below and above the AVX-512 path's 16 rows.
        for rows in [3, 40] {
            let x = candle_core::Var::from_tensor(&random(&[2, rows, 32], 7)?)?;
            let r = random(&[2, rows, 48], 8)?;
            let loss = (l.forward(x.as_tensor())? * &r)?.sum_all()?;
            let grads = loss.backward()?;
            let got = grads.get(x.as_tensor()).expect("a gradient for x");
            let expected = r.broadcast_matmul(f.weight())?;
            assert_eq!(got.dims(), expected.dims());
            let d = (got - &expected)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(d < 1e-4, "rows {rows}: {d}");
        }
        Ok(())
    }

    #[test]
    fn shared_projections_equal_one_by_one_with_and_without_an_adapter() -> Result<()> {
        let mut q = Linear::from_weight(random(&[48, 32], 1)?)?;
        let k = Linear::from_weight(random(&[16, 32], 2)?)?;
        let v = Linear::from_weight(random(&[16, 32], 3)?)?;
        q.set_adapter(Some(Arc::new(Fixed(random(&[48, 32], 4)?))));
        // Below and above the AVX-512 path's 16 rows; a batch of two.
        for rows in [3, 40] {
            let x = random(&[2, rows, 32], 5)?;
            let shared = Linear::forward_shared(&[&q, &k, &v], &x)?;
            for (l, y) in [&q, &k, &v].iter().zip(&shared) {
                let one = l.forward(&x)?;
                assert_eq!(y.dims(), one.dims());
                let d = (y - &one)?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f32>()?;
                assert!(d < 1e-4, "rows {rows}: {d}");
            }
        }
        Ok(())
    }
}
