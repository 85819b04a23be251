//! Causal grouped-query attention of a prompt in f32 with AVX-512 (inference: prompt
//! processing and evaluation's loglikelihood), on CPUs that have AVX-512 F.
//!
//! candle's path for the same step is a chain of ops: a batched matmul for the scores
//! (the `gemm` crate's AVX2 kernels on rayon's pool), a scale, the additive causal mask, a
//! softmax with a scalar `exp`, a second batched matmul, each op a pass over memory and a
//! hand-off between candle's two thread pools; the keys and values are first copied once
//! per query head (`repeat_kv`). Here a work item is one query head and 8 consecutive
//! queries: scores against the keys those queries may see (16 keys a vector, from the
//! key/value head's keys transposed once per call), the causal softmax (Cephes' `expf`
//! 16 lanes at a time, from [`super::silu512`]), and the weighted sum of values, written
//! straight into the `[t, heads · head_dim]` layout the output projection reads. The
//! arithmetic is the standard one (Vaswani et al. 2017, eq. 1, with the max subtracted
//! before `exp`), summed in another order than candle's, so results differ in the last
//! bits (the test bounds them against an f64 reference, as candle's).
//!
//! One of the modules where `unsafe` is allowed: the AVX-512 intrinsics and the disjoint
//! writes of the thread pool's work items.
#![allow(unsafe_code)]

/// Queries in a work item.
const QB: usize = 8;
/// Keys in a score tile (two vectors).
const KB: usize = 32;

/// Shapes of one [`causal_attention`] call.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (`heads` is a multiple).
    pub kv_heads: usize,
    /// New queries (the prompt's tokens this call).
    pub queries: usize,
    /// Keys and values in the cache after this call's (`>= queries`): query `i` sees keys
    /// `0..=keys - queries + i`.
    pub keys: usize,
    /// Floats per head (a multiple of 16, at most 128).
    pub head_dim: usize,
}

impl Shape {
    /// Asserts that the shape is one (`kv_heads` divides `heads`, `keys >= queries`) and that
    /// `q`, `k` and `v` hold it; `what` names the caller in the panic.
    fn check(&self, what: &str, q: &[f32], k: &[f32], v: &[f32]) {
        let kv_len = self.kv_heads * self.keys * self.head_dim;
        assert!(
            self.kv_heads > 0
                && self.heads.is_multiple_of(self.kv_heads)
                && self.keys >= self.queries,
            "{what}: bad shape {self:?}"
        );
        assert!(
            q.len() >= self.heads * self.queries * self.head_dim
                && k.len() >= kv_len
                && v.len() >= kv_len,
            "{what}: short input for {self:?}"
        );
    }
}

/// `softmax(q kᵀ · scale + causal mask) v` per query head, for a batch of one.
///
/// `q` `[heads, queries, head_dim]`, `k` and `v` `[kv_heads, keys, head_dim]`, all
/// row-major; query head `h` reads key/value head `h / (heads / kv_heads)`. Returns
/// `[queries, heads · head_dim]` (row `i`, head `h` at columns `h · head_dim..`), or `None`
/// when this CPU has no AVX-512 (see [`super::gemm512::available`]) or `head_dim` is not
/// 16, 32, 48, 64 or 128 (use candle's ops then).
///
/// # Panics
/// When a slice is shorter than its shape, `kv_heads` does not divide `heads`, or
/// `keys < queries`.
pub fn causal_attention(q: &[f32], k: &[f32], v: &[f32], s: Shape, scale: f32) -> Option<Vec<f32>> {
    if !supported(s.head_dim) {
        return None;
    }
    s.check("causal_attention", q, k, v);
    let Shape {
        heads,
        kv_heads,
        queries,
        keys,
        head_dim: hd,
    } = s;
    // Keys transposed per key/value head, [kv_heads, hd, padded] (zero past `keys`), so a
    // vector load holds 16 keys' values at one dimension.
    let padded = keys.div_ceil(KB) * KB;
    let kt = transpose_heads(k, kv_heads, keys, hd, padded);
    let blocks = queries.div_ceil(QB);
    let width = heads * hd;
    let mut y: Vec<f32> = vec![0f32; queries * width];
    let y_addr = y.as_mut_ptr() as usize;
    let rep = heads / kv_heads;
    let work = |items: std::ops::Range<usize>| {
        let mut scores = vec![0f32; QB * padded];
        for item in items {
            // Last blocks first: they see the most keys, so the pool's tail is short.
            let (block, h) = (blocks - 1 - item / heads, item % heads);
            let rows = block * QB..((block + 1) * QB).min(queries);
            let g = h / rep;
            // SAFETY: AVX-512 F was detected above; the item writes rows `rows` of head `h`'s
            // columns, which no other item writes, inside `y` (queries × width), and `y`
            // outlives the blocking `execute_chunked`; reads stay inside `q`, `kt` and `v`
            // (asserted and sized above).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                let item = Item {
                    q: q.as_ptr().add((h * queries) * hd),
                    kt: kt.as_ptr().add(g * hd * padded),
                    v: v.as_ptr().add(g * keys * hd),
                    y: (y_addr as *mut f32).add(h * hd),
                    width,
                    hd,
                    padded,
                    first_visible: keys - queries,
                };
                avx512::item(&item, rows, scale, &mut scores);
            }
        }
    };
    candle_core::utils::barrier_pool().execute_chunked(blocks * heads, work);
    Some(y)
}

/// The gradients of [`causal_attention`]'s output with respect to its inputs.
#[derive(Debug, Clone)]
pub struct Gradients {
    /// `[heads, queries, head_dim]`, as `q`.
    pub dq: Vec<f32>,
    /// `[kv_heads, keys, head_dim]`, as `k`.
    pub dk: Vec<f32>,
    /// `[kv_heads, keys, head_dim]`, as `v`.
    pub dv: Vec<f32>,
}

/// Query blocks are dealt to this many work items per key/value head, so that the items'
/// partial key and value gradients need no locking and both cores stay busy.
const PARTS: usize = 4;

/// The backward of [`causal_attention`] (the training step's attention): given its
/// inputs, its output `y` and the loss's gradient `dy` (both `[queries, heads · head_dim]`),
/// the gradients of `q`, `k` and `v`.
///
/// With `P = softmax(scale · q kᵀ + causal mask)` per head, `y = P v`: `dv = Pᵀ dy`, `dP
/// = dy vᵀ`, `dS = P ⊙ (dP − rowsum(dy ⊙ y))`, `dq = scale · dS k`, `dk = scale · dSᵀ q`,
/// `dk` and `dv` summed over the query heads sharing a key/value head. `P` is recomputed
/// from `q` and `k` (not stored by the forward), a block of 8 queries at a time, as
/// FlashAttention's backward does (Dao et al. 2022, algorithm 4; `rowsum(dy ⊙ y)` is its
/// `D`). A work item is one key/value head's query heads over every [`PARTS`]-th query
/// block, with its own `dk` and `dv` sums, added up at the end. Returns `None` where
/// [`supported`] is false.
///
/// # Panics
/// As [`causal_attention`], or when `y` or `dy` is shorter than `queries · heads · head_dim`.
pub fn causal_attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    y: &[f32],
    dy: &[f32],
    s: Shape,
    scale: f32,
) -> Option<Gradients> {
    if !supported(s.head_dim) {
        return None;
    }
    s.check("causal_attention_backward", q, k, v);
    let Shape {
        heads,
        kv_heads,
        queries,
        keys,
        head_dim: hd,
    } = s;
    let width = heads * hd;
    assert!(
        y.len() >= queries * width && dy.len() >= queries * width,
        "causal_attention_backward: short output or gradient for {s:?}"
    );
    let padded = keys.div_ceil(KB) * KB;
    let (kt, vt) = (
        transpose_heads(k, kv_heads, keys, hd, padded),
        transpose_heads(v, kv_heads, keys, hd, padded),
    );
    let rep = heads / kv_heads;
    let blocks = queries.div_ceil(QB);
    let mut dq = vec![0f32; heads * queries * hd];
    // Each item's own dk and dv sums, [items, keys, hd] each.
    let items = kv_heads * PARTS;
    let mut dk_parts = vec![0f32; items * keys * hd];
    let mut dv_parts = vec![0f32; items * keys * hd];
    let (dq_addr, dk_addr, dv_addr) = (
        dq.as_mut_ptr() as usize,
        dk_parts.as_mut_ptr() as usize,
        dv_parts.as_mut_ptr() as usize,
    );
    let work = |range: std::ops::Range<usize>| {
        let mut p = vec![0f32; QB * padded];
        let mut ds = vec![0f32; QB * padded];
        for item in range {
            let (g, part) = (item / PARTS, item % PARTS);
            // Last blocks first: they see the most keys.
            for block in (part..blocks).step_by(PARTS).rev() {
                let rows = block * QB..((block + 1) * QB).min(queries);
                for h in g * rep..(g + 1) * rep {
                    // SAFETY: AVX-512 F was detected (`supported`); the item writes rows `rows`
                    // of head h's dq (no other item has those rows of that head) and its own
                    // dk and dv sums; all of them outlive the blocking `execute_chunked`;
                    // reads stay inside the inputs (asserted above) and `kt`, `vt`.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        let b = BackwardItem {
                            q: q.as_ptr().add(h * queries * hd),
                            k: k.as_ptr().add(g * keys * hd),
                            kt: kt.as_ptr().add(g * hd * padded),
                            vt: vt.as_ptr().add(g * hd * padded),
                            y: y.as_ptr().add(h * hd),
                            dy: dy.as_ptr().add(h * hd),
                            dq: (dq_addr as *mut f32).add(h * queries * hd),
                            dk: (dk_addr as *mut f32).add(item * keys * hd),
                            dv: (dv_addr as *mut f32).add(item * keys * hd),
                            width,
                            hd,
                            padded,
                            first_visible: keys - queries,
                        };
                        avx512::backward_block(&b, rows.clone(), scale, &mut p, &mut ds);
                    }
                }
            }
        }
    };
    candle_core::utils::barrier_pool().execute_chunked(items, work);
    let sum_parts = |parts: &[f32]| -> Vec<f32> {
        let len = keys * hd;
        let mut out = vec![0f32; kv_heads * len];
        for (g, dst) in out.chunks_exact_mut(len).enumerate() {
            for part in parts[g * PARTS * len..(g + 1) * PARTS * len].chunks_exact(len) {
                for (d, x) in dst.iter_mut().zip(part) {
                    *d += x;
                }
            }
        }
        out
    };
    Some(Gradients {
        dq,
        dk: sum_parts(&dk_parts),
        dv: sum_parts(&dv_parts),
    })
}

/// `x` `[heads, keys, hd]` as `[heads, hd, padded]` (zero past `keys`).
fn transpose_heads(x: &[f32], heads: usize, keys: usize, hd: usize, padded: usize) -> Vec<f32> {
    let mut t = vec![0f32; heads * hd * padded];
    for g in 0..heads {
        let dst = &mut t[g * hd * padded..(g + 1) * hd * padded];
        for (j, row) in x[g * keys * hd..(g + 1) * keys * hd]
            .chunks_exact(hd)
            .enumerate()
        {
            for (d, x) in row.iter().enumerate() {
                dst[d * padded + j] = *x;
            }
        }
    }
    t
}

/// Whether [`causal_attention`] runs for heads of `head_dim` floats on this CPU.
pub fn supported(head_dim: usize) -> bool {
    super::gemm512::available() && matches!(head_dim, 16 | 32 | 48 | 64 | 128)
}

/// [`causal_attention`] as a candle op over `q` `[b, heads, queries, head_dim]`, `k` and `v`
/// `[b, kv_heads, keys, head_dim]`, all contiguous f32 on the CPU, each sequence of the batch
/// on its own; output `[b, queries, heads · head_dim]`. Its backward is [`causal_attention_backward`] (training applies it
/// with `apply_op3`, inference with `apply_op3_no_bwd`). Check [`supported`] first.
#[derive(Debug, Clone, Copy)]
pub struct CausalAttention {
    /// The softmax's scale, `1 / sqrt(head_dim)`.
    pub scale: f32,
}

impl CausalAttention {
    /// The batch size and [`Shape`] of `q` `[b, heads, queries, head_dim]` and `k`, `v` `[b,
    /// kv_heads, keys, head_dim]`.
    fn shapes(q: &[usize], k: &[usize], v: &[usize]) -> candle_core::Result<(usize, Shape)> {
        let (&[b, heads, queries, head_dim], &[kb, kv_heads, keys, kd], true) = (q, k, k == v)
        else {
            candle_core::bail!("causal attention: shapes {q:?}, {k:?}, {v:?}");
        };
        if kb != b || kd != head_dim || keys < queries || kv_heads == 0 || heads % kv_heads != 0 {
            candle_core::bail!("causal attention: shapes {q:?}, {k:?}");
        }
        let shape = Shape {
            heads,
            kv_heads,
            queries,
            keys,
            head_dim,
        };
        Ok((b, shape))
    }
}

/// The batch's per-sequence results one after another (a batch of one as it is, not copied).
fn joined(mut parts: Vec<Vec<f32>>) -> Vec<f32> {
    if parts.len() == 1 {
        parts.pop().unwrap_or_default()
    } else {
        parts.concat()
    }
}

impl candle_core::CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention-avx512"
    }

    fn cpu_fwd(
        &self,
        q: &candle_core::CpuStorage,
        ql: &candle_core::Layout,
        k: &candle_core::CpuStorage,
        kl: &candle_core::Layout,
        v: &candle_core::CpuStorage,
        vl: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::{bail, CpuStorage};
        let (q, k, v) = (
            super::f32_slice(q, ql, "causal attention: q")?,
            super::f32_slice(k, kl, "causal attention: k")?,
            super::f32_slice(v, vl, "causal attention: v")?,
        );
        let (b, s) = Self::shapes(ql.dims(), kl.dims(), vl.dims())?;
        let (q_len, kv_len) = (
            s.heads * s.queries * s.head_dim,
            s.kv_heads * s.keys * s.head_dim,
        );
        // Each sequence of the batch its own problem.
        let mut ys = Vec::with_capacity(b);
        for i in 0..b {
            let Some(yi) = causal_attention(
                &q[i * q_len..(i + 1) * q_len],
                &k[i * kv_len..(i + 1) * kv_len],
                &v[i * kv_len..(i + 1) * kv_len],
                s,
                self.scale,
            ) else {
                bail!(
                    "causal attention: no AVX-512 or an unsupported head size {}",
                    s.head_dim
                );
            };
            ys.push(yi);
        }
        Ok((
            CpuStorage::F32(joined(ys)),
            (b, s.queries, s.heads * s.head_dim).into(),
        ))
    }

    fn bwd(
        &self,
        q: &candle_core::Tensor,
        k: &candle_core::Tensor,
        v: &candle_core::Tensor,
        y: &candle_core::Tensor,
        dy: &candle_core::Tensor,
    ) -> candle_core::Result<(
        Option<candle_core::Tensor>,
        Option<candle_core::Tensor>,
        Option<candle_core::Tensor>,
    )> {
        use candle_core::{bail, Tensor};
        let (b, s) = Self::shapes(q.dims(), k.dims(), v.dims())?;
        // Detached: gradients computed from tensors that carry a graph would carry it on.
        let tensors = [q, k, v, y, dy].map(|t| t.detach().contiguous());
        let [q, k, v, y, dy] = tensors;
        let (q, k, v, y, dy) = (q?, k?, v?, y?, dy?);
        let guards = [&q, &k, &v, &y, &dy].map(|t| t.storage_and_layout());
        let slices = guards
            .iter()
            .map(|(storage, layout)| {
                super::tensor_f32(storage, layout, "causal attention backward: an input")
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let (q_len, kv_len) = (
            s.heads * s.queries * s.head_dim,
            s.kv_heads * s.keys * s.head_dim,
        );
        let (mut dq, mut dk, mut dv) = (
            Vec::with_capacity(b),
            Vec::with_capacity(b),
            Vec::with_capacity(b),
        );
        for i in 0..b {
            let Some(g) = causal_attention_backward(
                &slices[0][i * q_len..(i + 1) * q_len],
                &slices[1][i * kv_len..(i + 1) * kv_len],
                &slices[2][i * kv_len..(i + 1) * kv_len],
                &slices[3][i * q_len..(i + 1) * q_len],
                &slices[4][i * q_len..(i + 1) * q_len],
                s,
                self.scale,
            ) else {
                bail!(
                    "causal attention backward: no AVX-512 or an unsupported head size {}",
                    s.head_dim
                );
            };
            dq.push(g.dq);
            dk.push(g.dk);
            dv.push(g.dv);
        }
        let device = q.device();
        Ok((
            Some(Tensor::from_vec(joined(dq), q.shape(), device)?),
            Some(Tensor::from_vec(joined(dk), k.shape(), device)?),
            Some(Tensor::from_vec(joined(dv), v.shape(), device)?),
        ))
    }
}

/// Attention of one new query per head against a key/value cache read in place: the decode
/// step of generation, where candle's path is two tiny batched matmuls (the `gemm` crate,
/// which packs its operands for each) with a scale and a softmax between them, on one core.
/// Here each query head is a work item on candle's thread pool: its scores (one key a row
/// of `head_dim / 16` vectors, reduced across lanes), the softmax (max subtracted, Cephes'
/// `expf` 16 lanes at a time) and the values' weighted sum.
///
/// `q` `[heads, head_dim]`; key/value head `g`'s key `j` is `k[g·head_stride + j·head_dim..]`
/// (and likewise in `v`), for `j < keys`: the `[kv_heads, capacity, head_dim]` buffer of a
/// cache, `head_stride = capacity · head_dim`. Query head `h` reads head `h / (heads /
/// kv_heads)`. Returns `[heads · head_dim]` (head `h` at `h · head_dim..`), or `None` where
/// [`supported`] is false. Sums run in another order than candle's, so results differ from
/// its in the last bits (tests bound them against an f64 reference).
///
/// # Panics
/// When `kv_heads` does not divide `heads`, `keys` is 0, or a slice is shorter than its
/// shape.
#[allow(clippy::too_many_arguments)]
pub fn decode_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    heads: usize,
    kv_heads: usize,
    keys: usize,
    head_dim: usize,
    head_stride: usize,
    scale: f32,
) -> Option<Vec<f32>> {
    if !supported(head_dim) {
        return None;
    }
    assert!(
        kv_heads > 0
            && heads.is_multiple_of(kv_heads)
            && keys > 0
            && head_stride >= keys * head_dim,
        "decode_attention: bad shape"
    );
    let last = (kv_heads - 1) * head_stride + keys * head_dim;
    assert!(
        q.len() >= heads * head_dim && k.len() >= last && v.len() >= last,
        "decode_attention: short input"
    );
    let mut y = vec![0f32; heads * head_dim];
    let y_addr = y.as_mut_ptr() as usize;
    let rep = heads / kv_heads;
    let work = |items: std::ops::Range<usize>| {
        let mut scores = vec![0f32; keys.next_multiple_of(16)];
        for h in items {
            let g = h / rep;
            // SAFETY: AVX-512 F was detected (`supported`); head h writes its own `head_dim`
            // floats of `y`, which outlives the blocking call; reads stay inside `q`, and
            // inside `k`, `v` up to `last` (asserted).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                let one = DecodeHead {
                    q: q.as_ptr().add(h * head_dim),
                    k: k.as_ptr().add(g * head_stride),
                    v: v.as_ptr().add(g * head_stride),
                    y: (y_addr as *mut f32).add(h * head_dim),
                    keys,
                };
                match head_dim {
                    16 => avx512::decode_head::<1>(&one, scale, &mut scores),
                    32 => avx512::decode_head::<2>(&one, scale, &mut scores),
                    48 => avx512::decode_head::<3>(&one, scale, &mut scores),
                    64 => avx512::decode_head::<4>(&one, scale, &mut scores),
                    _ => avx512::decode_head::<8>(&one, scale, &mut scores),
                }
            }
        }
    };
    candle_core::utils::barrier_pool().execute_chunked(heads, work);
    Some(y)
}

/// One query head of [`decode_attention`]: its query, its key/value head's first key and
/// value (`head_dim` floats apart), its output, and the number of keys.
struct DecodeHead {
    q: *const f32,
    k: *const f32,
    v: *const f32,
    y: *mut f32,
    keys: usize,
}

/// One head's pointers and strides for [`avx512::item`].
struct Item {
    /// Query rows of the head, `hd` floats each.
    q: *const f32,
    /// The key/value head's keys transposed, `[hd, padded]`.
    kt: *const f32,
    /// The key/value head's values, `[keys, hd]`.
    v: *const f32,
    /// The output's first row at the head's first column (row stride `width`).
    y: *mut f32,
    width: usize,
    hd: usize,
    padded: usize,
    /// Keys visible to query 0, minus one (`keys - queries`).
    first_visible: usize,
}

/// One query head's pointers for [`avx512::backward_block`].
struct BackwardItem {
    /// Query rows of the head, `[queries, hd]`.
    q: *const f32,
    /// The key/value head's keys, `[keys, hd]`.
    k: *const f32,
    /// Its keys and values transposed, `[hd, padded]` each.
    kt: *const f32,
    vt: *const f32,
    /// The output and its gradient at row 0, the head's first column (row stride `width`).
    y: *const f32,
    dy: *const f32,
    /// The head's query gradient, `[queries, hd]`.
    dq: *mut f32,
    /// This work item's key and value gradient sums, `[keys, hd]` each.
    dk: *mut f32,
    dv: *mut f32,
    width: usize,
    hd: usize,
    padded: usize,
    /// Keys visible to query 0, minus one (`keys - queries`).
    first_visible: usize,
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BackwardItem, Item, KB, QB};
    use std::arch::x86_64::*;

    /// Queries `rows` (at most [`QB`]) of one head: scores into `scores` (`[QB, padded]`),
    /// softmax in place, then the values' weighted sums into `y`.
    ///
    /// # Safety
    /// AVX-512 F; the pointers of `it` cover `rows` and every key they may see.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn item(it: &Item, rows: std::ops::Range<usize>, scale: f32, scores: &mut [f32]) {
        let n = rows.len();
        // Keys visible to each row, and to the block (its last row).
        let visible = |r: usize| it.first_visible + rows.start + r + 1;
        let block_keys = visible(n - 1);
        // SAFETY (whole body): rows and keys stay within the caller's bounds.
        unsafe {
            // Scores for all rows: q[r] · kt[.., j] · scale.
            let q: [*const f32; QB] =
                std::array::from_fn(|r| it.q.add((rows.start + r.min(n - 1)) * it.hd));
            let t = Transposed {
                t: it.kt,
                hd: it.hd,
                padded: it.padded,
            };
            dots(&q, n, &t, block_keys, scale, scores);
            // Softmax over each row's visible keys; later keys get weight 0.
            let inv_sum = softmax_rows(
                scores,
                it.padded,
                n,
                it.first_visible + rows.start,
                block_keys,
            );
            let sums = RowSums {
                w: scores,
                padded: it.padded,
                n,
                first_visible: it.first_visible + rows.start,
                block_keys,
                m: it.v,
                hd: it.hd,
                out: it.y.add(rows.start * it.width),
                out_stride: it.width,
                factor: &inv_sum,
            };
            sums.run();
        }
    }

    /// [`super::decode_attention`] for one query head of `D · 16` floats; `scores` holds
    /// at least `keys` rounded up to 16.
    ///
    /// # Safety
    /// AVX-512 F; the pointers of `one` cover the head's query, output and `keys` keys and
    /// values.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn decode_head<const D: usize>(
        one: &super::DecodeHead,
        scale: f32,
        scores: &mut [f32],
    ) {
        let keys = one.keys;
        // SAFETY (whole body): every pointer stays within the head's query, output, and its
        // `keys` keys and values (the caller's bounds); `scores` is long enough.
        unsafe {
            let q: [__m512; D] = std::array::from_fn(|d| _mm512_loadu_ps(one.q.add(16 * d)));
            let dot = |j: usize| {
                let kj = one.k.add(j * D * 16);
                let mut acc = _mm512_mul_ps(q[0], _mm512_loadu_ps(kj));
                for (d, qd) in q.iter().enumerate().skip(1) {
                    acc = _mm512_fmadd_ps(*qd, _mm512_loadu_ps(kj.add(16 * d)), acc);
                }
                acc
            };
            // 16 keys at a time: their 16 partial-sum vectors reduced together (one vector of
            // 16 scores), instead of a horizontal sum per key.
            let sv = _mm512_set1_ps(scale);
            let mut maxv = _mm512_set1_ps(f32::NEG_INFINITY);
            let full = keys / 16 * 16;
            for j0 in (0..full).step_by(16) {
                let acc: [__m512; 16] = std::array::from_fn(|i| dot(j0 + i));
                let s16 = _mm512_mul_ps(sum_lanes16(acc), sv);
                _mm512_storeu_ps(scores.as_mut_ptr().add(j0), s16);
                maxv = _mm512_max_ps(maxv, s16);
            }
            let mut max = _mm512_reduce_max_ps(maxv);
            for (j, s) in scores.iter_mut().enumerate().take(keys).skip(full) {
                *s = _mm512_reduce_add_ps(dot(j)) * scale;
                max = max.max(*s);
            }
            let mv = _mm512_set1_ps(max);
            let mut sum = _mm512_setzero_ps();
            let mut j = 0;
            while j < keys {
                let left = (keys - j).min(16);
                let mask: __mmask16 = ((1u32 << left) - 1) as __mmask16;
                let p = scores.as_mut_ptr().add(j);
                let e = super::super::silu512::avx512::exp16(_mm512_sub_ps(
                    _mm512_maskz_loadu_ps(mask, p),
                    mv,
                ));
                let e = _mm512_maskz_mov_ps(mask, e);
                _mm512_mask_storeu_ps(p, mask, e);
                sum = _mm512_add_ps(sum, e);
                j += 16;
            }
            let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
            // Four sets of accumulators, key j into set j % 4: with one set, each fused
            // multiply-add waited for the previous key's (a latency-bound chain).
            let mut y = [[_mm512_setzero_ps(); D]; 4];
            let add_key = |y: &mut [__m512; D], j: usize| {
                let vj = one.v.add(j * D * 16);
                let pv = _mm512_set1_ps(scores[j]);
                for (d, yd) in y.iter_mut().enumerate() {
                    *yd = _mm512_fmadd_ps(pv, _mm512_loadu_ps(vj.add(16 * d)), *yd);
                }
            };
            let quads = keys / 4 * 4;
            for j in (0..quads).step_by(4) {
                for (set, ys) in y.iter_mut().enumerate() {
                    add_key(ys, j + set);
                }
            }
            for j in quads..keys {
                add_key(&mut y[j - quads], j);
            }
            let [y0, y1, y2, y3] = y;
            for (d, (((a, b), c), e)) in y0.iter().zip(&y1).zip(&y2).zip(&y3).enumerate() {
                let total = _mm512_add_ps(_mm512_add_ps(*a, *b), _mm512_add_ps(*c, *e));
                _mm512_storeu_ps(one.y.add(16 * d), _mm512_mul_ps(total, inv));
            }
        }
    }

    /// The lane sums of 16 vectors as one vector (`out[i] = Σ_l v[i][l]`): pairs of vectors
    /// interleaved and added by 32- then 64-bit elements (4 partial sums of 4 vectors in each
    /// 128-bit lane), then the 128-bit lanes folded twice.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn sum_lanes16(v: [__m512; 16]) -> __m512 {
        // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] for a = v[2i], b = v[2i+1].
        let x: [__m512; 8] = std::array::from_fn(|i| {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b))
        });
        // Per 128-bit lane: one partial sum of each of v[4i..4i + 4], in order.
        let z: [__m512; 4] = std::array::from_fn(|i| {
            let (a, b) = (_mm512_castps_pd(x[2 * i]), _mm512_castps_pd(x[2 * i + 1]));
            _mm512_add_ps(
                _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)),
            )
        });
        // Fold the four 128-bit lanes: z0 with z1, z2 with z3, then the pairs together.
        let fold = |a: __m512, b: __m512| {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x88>(a, b),
                _mm512_shuffle_f32x4::<0xdd>(a, b),
            )
        };
        fold(fold(z[0], z[1]), fold(z[2], z[3]))
    }

    /// One block of queries `rows` (at most [`QB`]) of one head in
    /// [`super::causal_attention_backward`]: `P` into `p`, `dS · scale` into `ds` (both
    /// `[QB, padded]`), then the block's rows of `dq` and its terms of the item's `dk` and
    /// `dv` sums.
    ///
    /// # Safety
    /// AVX-512 F; the pointers of `b` cover `rows` and every key they may see; `p` and `ds`
    /// hold `QB · padded` floats.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn backward_block(
        b: &BackwardItem,
        rows: std::ops::Range<usize>,
        scale: f32,
        p: &mut [f32],
        ds: &mut [f32],
    ) {
        let n = rows.len();
        let first_visible = b.first_visible + rows.start;
        let block_keys = first_visible + n;
        // SAFETY (whole body): rows and keys stay within the caller's bounds.
        unsafe {
            let q: [*const f32; QB] =
                std::array::from_fn(|r| b.q.add((rows.start + r.min(n - 1)) * b.hd));
            let dy: [*const f32; QB] =
                std::array::from_fn(|r| b.dy.add((rows.start + r.min(n - 1)) * b.width));
            let transposed = |t| Transposed {
                t,
                hd: b.hd,
                padded: b.padded,
            };
            // P, normalized.
            dots(&q, n, &transposed(b.kt), block_keys, scale, p);
            let inv_sum = softmax_rows(p, b.padded, n, first_visible, block_keys);
            let end = block_keys.next_multiple_of(16);
            for (r, inv) in inv_sum.iter().enumerate().take(n) {
                let iv = _mm512_set1_ps(*inv);
                for j in (0..end).step_by(16) {
                    let pp = p.as_mut_ptr().add(r * b.padded + j);
                    _mm512_storeu_ps(pp, _mm512_mul_ps(_mm512_loadu_ps(pp), iv));
                }
            }
            // dP = dy vᵀ, then dS · scale = P ⊙ (dP − D) · scale with D = dy · y per row.
            dots(&dy, n, &transposed(b.vt), block_keys, 1.0, ds);
            let sv = _mm512_set1_ps(scale);
            for (r, dyr) in dy.iter().copied().enumerate().take(n) {
                let yr = b.y.add((rows.start + r) * b.width);
                let mut dot = _mm512_setzero_ps();
                for c in (0..b.hd).step_by(16) {
                    dot = _mm512_fmadd_ps(
                        _mm512_loadu_ps(dyr.add(c)),
                        _mm512_loadu_ps(yr.add(c)),
                        dot,
                    );
                }
                let dv = _mm512_set1_ps(_mm512_reduce_add_ps(dot));
                for j in (0..end).step_by(16) {
                    let (pp, sp) = (
                        p.as_ptr().add(r * b.padded + j),
                        ds.as_mut_ptr().add(r * b.padded + j),
                    );
                    let d = _mm512_sub_ps(_mm512_loadu_ps(sp), dv);
                    _mm512_storeu_ps(sp, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(pp), d), sv));
                }
            }
            // dq rows = (dS · scale) k.
            RowSums {
                w: ds,
                padded: b.padded,
                n,
                first_visible,
                block_keys,
                m: b.k,
                hd: b.hd,
                out: b.dq.add(rows.start * b.hd),
                out_stride: b.hd,
                factor: &[1.0; QB],
            }
            .run();
            // dk += (dS · scale)ᵀ q, dv += Pᵀ dy over the keys the block sees.
            for (w, x, out) in [(&*ds, &q, b.dk), (&*p, &dy, b.dv)] {
                KeySums {
                    w,
                    padded: b.padded,
                    n,
                    keys: block_keys,
                    x: *x,
                    hd: b.hd,
                    out,
                }
                .run();
            }
        }
    }

    /// Sums added to key rows: `out[j] += Σ_{r < n} w[r·padded + j] · x_r` for keys `j <
    /// keys`, each `x_r` a row of `hd` floats.
    struct KeySums<'a> {
        w: &'a [f32],
        padded: usize,
        n: usize,
        keys: usize,
        x: [*const f32; QB],
        hd: usize,
        /// `[keys, hd]`.
        out: *mut f32,
    }

    impl KeySums<'_> {
        /// Adds the sums.
        ///
        /// # Safety
        /// AVX-512 F; `out` holds `keys` rows and each `x_r` (`r < n`) a row of `hd` floats
        /// (16, 32, 48, 64 or 128); `w` `n` rows of at least `keys`.
        #[target_feature(enable = "avx512f")]
        unsafe fn run(&self) {
            // SAFETY: the caller's bounds.
            unsafe {
                match self.hd {
                    16 => self.sums::<1, 8>(),
                    32 => self.sums::<2, 8>(),
                    48 => self.sums::<3, 4>(),
                    64 => self.sums::<4, 4>(),
                    _ => self.sums::<8, 2>(),
                }
            }
        }

        /// [`Self::run`] for `D · 16 == hd`, `K` keys sharing each `x_r` load.
        ///
        /// # Safety
        /// As [`Self::run`].
        #[target_feature(enable = "avx512f")]
        unsafe fn sums<const D: usize, const K: usize>(&self) {
            let mut j = 0;
            while j < self.keys {
                let kk = K.min(self.keys - j);
                // SAFETY: keys j..j + kk < keys rows of `out`; rows r < n of `x` and `w`.
                unsafe {
                    let mut acc = [[_mm512_setzero_ps(); D]; K];
                    for (c, acc_c) in acc.iter_mut().enumerate().take(kk) {
                        for (d, a) in acc_c.iter_mut().enumerate() {
                            *a = _mm512_loadu_ps(self.out.add((j + c) * self.hd + 16 * d));
                        }
                    }
                    for r in 0..self.n {
                        let xv: [__m512; D] =
                            std::array::from_fn(|d| _mm512_loadu_ps(self.x[r].add(16 * d)));
                        let wr = self.w.as_ptr().add(r * self.padded + j);
                        for (c, acc_c) in acc.iter_mut().enumerate().take(kk) {
                            let w = _mm512_set1_ps(*wr.add(c));
                            for (a, x) in acc_c.iter_mut().zip(&xv) {
                                *a = _mm512_fmadd_ps(w, *x, *a);
                            }
                        }
                    }
                    for (c, acc_c) in acc.iter().enumerate().take(kk) {
                        for (d, a) in acc_c.iter().enumerate() {
                            _mm512_storeu_ps(self.out.add((j + c) * self.hd + 16 * d), *a);
                        }
                    }
                }
                j += kk;
            }
        }
    }

    /// Softmax numerators in place: row `r < n` of `scores` (row stride `padded`) becomes
    /// `exp(s − max)` over its `first_visible + r + 1` visible keys and 0 past them, up to
    /// `block_keys` rounded up to 16. Returns each row's `1 / Σ exp`.
    ///
    /// # Safety
    /// AVX-512 F; `scores` holds `n` rows of `padded >= block_keys` rounded up to 16 floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn softmax_rows(
        scores: &mut [f32],
        padded: usize,
        n: usize,
        first_visible: usize,
        block_keys: usize,
    ) -> [f32; QB] {
        let mut inv_sum = [0f32; QB];
        for (r, inv) in inv_sum.iter_mut().enumerate().take(n) {
            let row = &mut scores[r * padded..(r + 1) * padded];
            let len = first_visible + r + 1;
            let max = row[..len].iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x));
            let mv = _mm512_set1_ps(max);
            let mut sum = _mm512_setzero_ps();
            let mut j = 0;
            while j < block_keys {
                let left = len.saturating_sub(j).min(16);
                let mask: __mmask16 = ((1u32 << left) - 1) as __mmask16;
                // SAFETY: j + 16 <= block_keys rounded up to 16 <= padded.
                unsafe {
                    let p = row.as_mut_ptr().add(j);
                    let e =
                        super::super::silu512::avx512::exp16(_mm512_sub_ps(_mm512_loadu_ps(p), mv));
                    let e = _mm512_maskz_mov_ps(mask, e);
                    _mm512_storeu_ps(p, e);
                    sum = _mm512_add_ps(sum, e);
                }
                j += 16;
            }
            *inv = 1.0 / _mm512_reduce_add_ps(sum);
        }
        inv_sum
    }

    /// Keys (or values) of one key/value head transposed, `[hd, padded]`: a vector load at
    /// `t[d·padded + j]` holds 16 keys' values at dimension `d`.
    pub(super) struct Transposed {
        pub(super) t: *const f32,
        pub(super) hd: usize,
        pub(super) padded: usize,
    }

    /// `out[r·padded + j] = scale · a_r · t[.., j]` for rows `r < n` and keys `j` below
    /// `keys` rounded up to [`KB`]; `a` has [`QB`] row pointers of `hd` floats (rows past
    /// `n` repeat a valid row: computed, never stored).
    ///
    /// # Safety
    /// AVX-512 F; every `a` row holds `hd` floats, `t` holds `[hd, padded]` with `padded >=
    /// keys` rounded up to `KB`; `out` holds `n · padded` floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dots(
        a: &[*const f32; QB],
        n: usize,
        t: &Transposed,
        keys: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        let sv = _mm512_set1_ps(scale);
        let mut j0 = 0;
        // SAFETY (whole loop): j0 + KB <= padded; d < hd; r < n rows of `out`.
        while j0 < keys {
            let mut acc = [[_mm512_setzero_ps(); 2]; QB];
            for d in 0..t.hd {
                unsafe {
                    let kp = t.t.add(d * t.padded + j0);
                    let k = [_mm512_loadu_ps(kp), _mm512_loadu_ps(kp.add(16))];
                    for (acc_r, a_r) in acc.iter_mut().zip(a) {
                        let av = _mm512_set1_ps(*a_r.add(d));
                        acc_r[0] = _mm512_fmadd_ps(av, k[0], acc_r[0]);
                        acc_r[1] = _mm512_fmadd_ps(av, k[1], acc_r[1]);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate().take(n) {
                unsafe {
                    let s = out.as_mut_ptr().add(r * t.padded + j0);
                    _mm512_storeu_ps(s, _mm512_mul_ps(acc_r[0], sv));
                    _mm512_storeu_ps(s.add(16), _mm512_mul_ps(acc_r[1], sv));
                }
            }
            j0 += KB;
        }
    }

    /// Weighted sums of rows: `out[r] = factor[r] · Σ_j w[r·padded + j] · m[j]` for rows
    /// `r < n`, row `r` summing keys `j < first_visible + r + 1` (the weights past a row's
    /// visible keys must be 0: rows are done in groups sharing each `m` load, over the
    /// group's last row's keys).
    pub(super) struct RowSums<'a> {
        pub(super) w: &'a [f32],
        pub(super) padded: usize,
        pub(super) n: usize,
        /// Keys visible to row 0, minus one.
        pub(super) first_visible: usize,
        /// Keys visible to row `n - 1` (an upper bound for all).
        pub(super) block_keys: usize,
        /// Rows `[keys, hd]`.
        pub(super) m: *const f32,
        pub(super) hd: usize,
        /// Row 0 of the output; row `r` at `out + r·out_stride`.
        pub(super) out: *mut f32,
        pub(super) out_stride: usize,
        pub(super) factor: &'a [f32; QB],
    }

    impl RowSums<'_> {
        /// Writes the sums.
        ///
        /// # Safety
        /// AVX-512 F; `m` holds `block_keys` rows of `hd` floats (`hd` 16, 32, 48, 64 or
        /// 128), `out` the `n` output rows, `w` `n · padded` weights.
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn run(&self) {
            // SAFETY: the caller's bounds.
            unsafe {
                match self.hd {
                    16 => self.sums::<1>(),
                    32 => self.sums::<2>(),
                    48 => self.sums::<3>(),
                    64 => self.sums::<4>(),
                    _ => self.sums::<8>(),
                }
            }
        }

        /// [`Self::run`] for `D · 16 == hd`.
        ///
        /// # Safety
        /// As [`Self::run`].
        #[target_feature(enable = "avx512f")]
        unsafe fn sums<const D: usize>(&self) {
            // Accumulators: G rows × D vectors, at most 32 registers.
            const G: usize = 4;
            let n = self.n;
            let mut r0 = 0;
            while r0 < n {
                let g = G.min(n - r0);
                // Row r0 + g - 1 sees the most keys of the group; the others' extra weights
                // are 0.
                let keys = (self.first_visible + r0 + g).min(self.block_keys);
                // Rows past the group's last repeat it (computed, never stored).
                let pr: [*const f32; G] = std::array::from_fn(|r| {
                    self.w
                        .as_ptr()
                        .wrapping_add((r0 + r.min(g - 1)) * self.padded)
                });
                let mut acc = [[_mm512_setzero_ps(); D]; G];
                for j in 0..keys {
                    // SAFETY: key j < block_keys rows of `m`; w rows r0..r0 + g exist.
                    unsafe {
                        let mp = self.m.add(j * self.hd);
                        let mv: [__m512; D] =
                            std::array::from_fn(|c| _mm512_loadu_ps(mp.add(16 * c)));
                        for (acc_r, p_r) in acc.iter_mut().zip(&pr) {
                            let w = _mm512_set1_ps(*p_r.add(j));
                            for (a, x) in acc_r.iter_mut().zip(&mv) {
                                *a = _mm512_fmadd_ps(w, *x, *a);
                            }
                        }
                    }
                }
                for (r, acc_r) in acc.iter().enumerate().take(g) {
                    let f = _mm512_set1_ps(self.factor[r0 + r]);
                    // SAFETY: output row r0 + r < n, its hd floats.
                    unsafe {
                        let yp = self.out.add((r0 + r) * self.out_stride);
                        for (c, a) in acc_r.iter().enumerate() {
                            _mm512_storeu_ps(yp.add(16 * c), _mm512_mul_ps(*a, f));
                        }
                    }
                }
                r0 += g;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        crate::rng::XorShift64Star::new(seed).uniform(n, 1.0)
    }

    /// The largest `|got − want|`.
    fn max_error(got: &[f32], want: &[f64]) -> f64 {
        assert_eq!(got.len(), want.len(), "lengths");
        got.iter()
            .zip(want)
            .map(|(a, b)| (f64::from(*a) - b).abs())
            .fold(0f64, f64::max)
    }

    /// Partial blocks of queries (8 a block) and keys (32 a tile), fewer blocks than the
    /// backward's work items, a cache prefix, grouped heads, every head size.
    fn edge_shapes() -> impl Iterator<Item = Shape> {
        [
            (1, 1, 1, 1, 16),
            (2, 1, 3, 3, 32),
            (9, 3, 37, 37, 64),
            (9, 3, 70, 70, 64),
            (9, 3, 5, 70, 64),
            (4, 2, 20, 53, 48),
            (4, 4, 9, 9, 128),
        ]
        .into_iter()
        .map(|(heads, kv_heads, queries, keys, head_dim)| Shape {
            heads,
            kv_heads,
            queries,
            keys,
            head_dim,
        })
    }

    /// One head's softmax weights for query `i` in f64: `P[i, j]` over its visible keys.
    fn probabilities(q: &[f32], k: &[f32], s: Shape, h: usize, i: usize, scale: f32) -> Vec<f64> {
        let hd = s.head_dim;
        let g = h / (s.heads / s.kv_heads);
        let qi = &q[(h * s.queries + i) * hd..][..hd];
        let seen = s.keys - s.queries + i + 1;
        let logits: Vec<f64> = (0..seen)
            .map(|j| {
                let kj = &k[(g * s.keys + j) * hd..][..hd];
                qi.iter()
                    .zip(kj)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum::<f64>()
                    * f64::from(scale)
            })
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|x| x / sum).collect()
    }

    /// The textbook computation in f64.
    fn reference(q: &[f32], k: &[f32], v: &[f32], s: Shape, scale: f32) -> Vec<f64> {
        let hd = s.head_dim;
        let mut y = vec![0f64; s.queries * s.heads * hd];
        for h in 0..s.heads {
            let g = h / (s.heads / s.kv_heads);
            for i in 0..s.queries {
                for (j, w) in probabilities(q, k, s, h, i, scale).iter().enumerate() {
                    let vj = &v[(g * s.keys + j) * hd..][..hd];
                    for d in 0..hd {
                        y[i * s.heads * hd + h * hd + d] += w * f64::from(vj[d]);
                    }
                }
            }
        }
        y
    }

    #[test]
    fn one_query_against_a_cache_in_place_matches_the_f64_reference() {
        if !crate::model::gemm512::available() {
            assert!(
                decode_attention(&[0.0; 16], &[0.0; 16], &[0.0; 16], 1, 1, 1, 16, 16, 1.0)
                    .is_none()
            );
            return;
        }
        // A cache of `capacity` positions per key/value head, `keys` of them filled.
        for (heads, kv_heads, keys, capacity, head_dim) in [
            (1, 1, 1, 1, 16),
            (2, 1, 17, 40, 32),
            (9, 3, 161, 300, 64),
            (4, 2, 33, 33, 48),
            (4, 4, 5, 9, 128),
        ] {
            let q = random(heads * head_dim, 11 + keys as u64);
            let k = random(kv_heads * capacity * head_dim, 12);
            let v = random(kv_heads * capacity * head_dim, 13);
            let q: Vec<f32> = q.iter().map(|x| x * 4.0).collect();
            let scale = 1.0 / (head_dim as f32).sqrt();
            let y = decode_attention(
                &q,
                &k,
                &v,
                heads,
                kv_heads,
                keys,
                head_dim,
                capacity * head_dim,
                scale,
            )
            .expect("avx-512");
            // The same keys and values packed `[kv_heads, keys, head_dim]` for the reference.
            let pack = |x: &[f32]| -> Vec<f32> {
                (0..kv_heads)
                    .flat_map(|g| x[g * capacity * head_dim..][..keys * head_dim].to_vec())
                    .collect()
            };
            let s = Shape {
                heads,
                kv_heads,
                queries: 1,
                keys,
                head_dim,
            };
            let worst = max_error(&y, &reference(&q, &pack(&k), &pack(&v), s, scale));
            assert!(
                worst < 1e-5,
                "{heads}/{kv_heads} heads, {keys} keys: {worst:e}"
            );
        }
    }

    #[test]
    fn matches_the_f64_reference_on_every_edge() {
        if !crate::model::gemm512::available() {
            let s = Shape {
                heads: 1,
                kv_heads: 1,
                queries: 1,
                keys: 1,
                head_dim: 16,
            };
            assert!(causal_attention(&[0.0; 16], &[0.0; 16], &[0.0; 16], s, 1.0).is_none());
            return;
        }
        for s in edge_shapes() {
            let q = random(s.heads * s.queries * s.head_dim, 1 + s.queries as u64);
            let k = random(s.kv_heads * s.keys * s.head_dim, 2 + s.keys as u64);
            let v = random(s.kv_heads * s.keys * s.head_dim, 3);
            // Scores of a few units, as a trained model's: the softmax is neither flat nor one-hot.
            let scale = 4.0 / (s.head_dim as f32).sqrt();
            let ours = causal_attention(&q, &k, &v, s, scale).expect("avx-512");
            let worst = max_error(&ours, &reference(&q, &k, &v, s, scale));
            assert!(worst < 1e-5, "{s:?}: max error {worst:e}");
        }
    }

    /// The backward's formulas in f64: `(dq, dk, dv)` of `Σ dy ⊙ y`.
    fn reference_backward(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        dy: &[f32],
        s: Shape,
        scale: f32,
    ) -> [Vec<f64>; 3] {
        let Shape {
            heads,
            kv_heads,
            queries,
            keys,
            head_dim: hd,
        } = s;
        let f = |x: &[f32]| -> Vec<f64> { x.iter().map(|v| f64::from(*v)).collect() };
        let (qf, kf, vf, dyf) = (f(q), f(k), f(v), f(dy));
        let scale64 = f64::from(scale);
        let (mut dq, mut dk, mut dv) = (
            vec![0f64; qf.len()],
            vec![0f64; kv_heads * keys * hd],
            vec![0f64; kv_heads * keys * hd],
        );
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        for h in 0..heads {
            let g = h / (heads / kv_heads);
            for i in 0..queries {
                let qi = &qf[(h * queries + i) * hd..][..hd];
                let dyi = &dyf[i * heads * hd + h * hd..][..hd];
                let key = |j: usize| (g * keys + j) * hd;
                let p = probabilities(q, k, s, h, i, scale);
                let dp: Vec<f64> = (0..p.len())
                    .map(|j| dot(dyi, &vf[key(j)..][..hd]))
                    .collect();
                let d: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                for j in 0..p.len() {
                    let ds = p[j] * (dp[j] - d) * scale64;
                    for c in 0..hd {
                        dq[(h * queries + i) * hd + c] += ds * kf[key(j) + c];
                        dk[key(j) + c] += ds * qi[c];
                        dv[key(j) + c] += p[j] * dyi[c];
                    }
                }
            }
        }
        [dq, dk, dv]
    }

    #[test]
    fn the_reference_backward_is_the_derivative_of_the_reference() {
        // Central differences of Σ dy ⊙ y in f64, for a few inputs of each tensor.
        let s = Shape {
            heads: 4,
            kv_heads: 2,
            queries: 5,
            keys: 7,
            head_dim: 16,
        };
        let scale = 0.7;
        let mut inputs = [
            random(s.heads * s.queries * 16, 21),
            random(s.kv_heads * s.keys * 16, 22),
            random(s.kv_heads * s.keys * 16, 23),
        ];
        let dy = random(s.queries * s.heads * 16, 24);
        let loss = |x: &[Vec<f32>; 3]| -> f64 {
            reference(&x[0], &x[1], &x[2], s, scale)
                .iter()
                .zip(&dy)
                .map(|(y, g)| y * f64::from(*g))
                .sum()
        };
        let grads = reference_backward(&inputs[0], &inputs[1], &inputs[2], &dy, s, scale);
        for (t, grad) in grads.iter().enumerate() {
            for idx in [0, 17, grad.len() - 1] {
                let x0 = inputs[t][idx];
                let eps = 1e-2f32;
                inputs[t][idx] = x0 + eps;
                let up = loss(&inputs);
                inputs[t][idx] = x0 - eps;
                let down = loss(&inputs);
                inputs[t][idx] = x0;
                // The perturbation is exact in f32; the step's error is O(eps²).
                let step = f64::from(x0 + eps) - f64::from(x0 - eps);
                let numeric = (up - down) / step;
                assert!(
                    (numeric - grad[idx]).abs() < 1e-3,
                    "tensor {t}, index {idx}: {numeric} vs {}",
                    grad[idx]
                );
            }
        }
    }

    #[test]
    fn the_backward_matches_the_f64_reference_on_every_edge() {
        let s = Shape {
            heads: 1,
            kv_heads: 1,
            queries: 1,
            keys: 1,
            head_dim: 16,
        };
        if !crate::model::gemm512::available() {
            let z = [0.0; 16];
            assert!(causal_attention_backward(&z, &z, &z, &z, &z, s, 1.0).is_none());
            return;
        }
        for s in edge_shapes() {
            let q = random(s.heads * s.queries * s.head_dim, 5 + s.queries as u64);
            let k = random(s.kv_heads * s.keys * s.head_dim, 6 + s.keys as u64);
            let v = random(s.kv_heads * s.keys * s.head_dim, 7);
            let dy = random(s.queries * s.heads * s.head_dim, 8);
            let scale = 4.0 / (s.head_dim as f32).sqrt();
            let y = causal_attention(&q, &k, &v, s, scale).expect("avx-512");
            let ours = causal_attention_backward(&q, &k, &v, &y, &dy, s, scale).expect("avx-512");
            let exact = reference_backward(&q, &k, &v, &dy, s, scale);
            for (name, got, want) in [
                ("dq", &ours.dq, &exact[0]),
                ("dk", &ours.dk, &exact[1]),
                ("dv", &ours.dv, &exact[2]),
            ] {
                let worst = max_error(got, want);
                assert!(worst < 1e-4, "{name} {s:?}: max error {worst:e}");
            }
        }
    }

    #[test]
    fn other_head_sizes_are_left_to_candle() {
        let s = Shape {
            heads: 1,
            kv_heads: 1,
            queries: 2,
            keys: 2,
            head_dim: 80,
        };
        assert!(causal_attention(&[0.0; 160], &[0.0; 160], &[0.0; 160], s, 1.0).is_none());
    }
}
