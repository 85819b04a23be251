//! `x W^T` in f32 with AVX-512, for the float projections (prompt processing, evaluation's
//! loglikelihood, the training forward) on CPUs that have AVX-512 F.
//!
//! candle 0.11.1's f32 matmul (the `gemm` crate) enables its AVX-512 kernels only under a
//! nightly feature, so on stable Rust it runs AVX2 microkernels (`x2x6`: 16 rows by 6
//! columns) at half the vector width of these CPUs. This is the same method at full width
//! (Goto and van de Geijn 2008, "Anatomy of high-performance matrix multiplication"): the
//! activations `x` `[m, k]` are packed once per call into panels of 16 rows stored
//! `k`-major, so that one 512-bit load holds 16 rows' values at one `k`; the weight `W`
//! `[n, k]` (Hugging Face's `[out, in]`) is read in place, one broadcast value per weight row
//! and `k`. A register tile of 32 rows (two panels) by 12 weight rows keeps 24 accumulators,
//! 14 loads per 24 fused multiply-adds. Work items are blocks of 96 weight rows by 64
//! activation rows on candle's own thread pool, consecutive items sharing a weight block.
//!
//! The sums run over `k` in order, as gemm's do, but with fused multiply-adds and other
//! blocking, so results differ from candle's in the last bits (the test bounds both against
//! exact sums). Chosen at run time with `is_x86_feature_detected!("avx512f")`; elsewhere
//! callers keep candle's matmul.
//!
//! One of the modules where `unsafe` is allowed: the AVX-512 intrinsics and the disjoint
//! writes of the thread pool's work items.
#![allow(unsafe_code)]

/// Activation rows in a packed panel (one 512-bit vector).
const PANEL: usize = 16;
/// Panels in a register tile.
const MP: usize = 2;
/// Weight rows in a register tile.
const NR: usize = 12;
/// Weight rows in a work item.
const NB: usize = 96;
/// Activation rows in a work item.
const MB: usize = 64;
/// Reduction steps a register tile sums before its outputs are stored (added to).
const KC: usize = 512;

/// Set to `1` to keep candle's matmul even where AVX-512 is present (to compare the two).
pub const DISABLE_ENV: &str = "BIOINSTRUCT_NO_AVX512";

/// Whether the AVX-512 kernel runs: the CPU has AVX-512 F (detected at run time, once) and
/// `BIOINSTRUCT_NO_AVX512` is not `1`.
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let disabled = std::env::var(DISABLE_ENV).is_ok_and(|v| v == "1");
        #[cfg(target_arch = "x86_64")]
        {
            !disabled && std::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = disabled;
            false
        }
    })
}

/// `x` `[m, k]` as panels of 16 rows, `k`-major: `packed[(p·k + kk)·16 + r] = x[p·16 + r, kk]`,
/// zero past row `m`; one panel per work item on candle's thread pool.
fn pack(x: &[f32], m: usize, k: usize) -> Vec<f32> {
    let panels = m.div_ceil(PANEL);
    let len = panels * k * PANEL;
    let mut packed: Vec<f32> = Vec::with_capacity(len);
    let addr = packed.as_mut_ptr() as usize;
    let work = |items: std::ops::Range<usize>| {
        for p in items {
            // SAFETY: panel p is the item's own `k·16` floats of the allocation's capacity
            // (`len`), written here in full (rows past `m` as zeros) before `set_len`.
            let panel = unsafe {
                std::slice::from_raw_parts_mut((addr as *mut f32).add(p * k * PANEL), k * PANEL)
            };
            let rows = PANEL.min(m - p * PANEL);
            if rows < PANEL {
                panel.fill(0.0);
            }
            let mut done = 0;
            #[cfg(target_arch = "x86_64")]
            if rows == PANEL {
                // SAFETY: AVX-512 F (checked by the caller, `run`); the panel's 16 rows of `x`
                // exist (`rows == 16`) and `panel` holds `k·16` floats.
                done = unsafe { avx512::pack_panel(&x[p * PANEL * k..], k, panel) };
            }
            for r in 0..rows {
                let row = &x[(p * PANEL + r) * k..(p * PANEL + r + 1) * k];
                for (kk, v) in row.iter().enumerate().skip(done) {
                    panel[kk * PANEL + r] = *v;
                }
            }
        }
    };
    candle_core::utils::barrier_pool().execute_chunked(panels, work);
    // SAFETY: every panel, so every element below `len`, was written above.
    unsafe { packed.set_len(len) };
    packed
}

/// `y[m, n] = x[m, k] · w[n, k]^T`, both row-major and contiguous; `None` when this CPU has
/// no AVX-512 (use candle's matmul then).
///
/// # Panics
/// When `x` or `w` is shorter than `m·k` or `n·k`.
pub fn matmul_nt(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Option<Vec<f32>> {
    matmul_nt_many(x, &[(w, n)], m, k).and_then(|mut ys| ys.pop())
}

/// `y[m, n] = x[m, k] · w[k, n]`, both row-major and contiguous (`w` not transposed: the
/// input gradient `g W` of a projection whose weight `W` is `[out, in]`, with `k = out`);
/// `None` when this CPU has no AVX-512. The same kernel as [`matmul_nt`], reading each
/// weight value at `w[kk·n + j]` instead of `w[j·k + kk]`: a tile's 12 columns at one `kk`
/// are 12 consecutive floats.
///
/// # Panics
/// When `x` or `w` is shorter than `m·k` or `k·n`.
pub fn matmul_nn(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Option<Vec<f32>> {
    run(x, &[(w, n)], m, k, Weight::KByN).and_then(|mut ys| ys.pop())
}

/// [`matmul_nt`] of one `x` `[m, k]` by several weights `(w, n)` (`[n, k]` each), as the
/// query, key and value projections of one input: `x` is packed once, and all products
/// share one pass of the thread pool. Returns one `[m, n]` per weight, in order; `None`
/// without AVX-512.
///
/// # Panics
/// When `x` is shorter than `m·k` or a `w` shorter than its `n·k`.
pub fn matmul_nt_many(
    x: &[f32],
    ws: &[(&[f32], usize)],
    m: usize,
    k: usize,
) -> Option<Vec<Vec<f32>>> {
    run(x, ws, m, k, Weight::NByK)
}

/// How a weight `w` of `n` output columns and `k` reduction steps is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Weight {
    /// `[n, k]` row-major (Hugging Face's `[out, in]`, multiplied transposed).
    NByK,
    /// `[k, n]` row-major (multiplied as it is).
    KByN,
}

fn run(
    x: &[f32],
    ws: &[(&[f32], usize)],
    m: usize,
    k: usize,
    layout: Weight,
) -> Option<Vec<Vec<f32>>> {
    if !available() {
        return None;
    }
    assert!(
        x.len() >= m * k && ws.iter().all(|(w, n)| w.len() >= n * k),
        "gemm512: short input"
    );
    let packed = pack(x, m, k);
    let mut ys: Vec<Vec<f32>> = ws.iter().map(|(_, n)| Vec::with_capacity(m * n)).collect();
    let y_addrs: Vec<usize> = ys.iter_mut().map(|y| y.as_mut_ptr() as usize).collect();
    let row_blocks = m.div_ceil(MB);
    // Work items weight by weight: the first item of each, and the total.
    let mut firsts = Vec::with_capacity(ws.len());
    let mut items = 0;
    for (_, n) in ws {
        firsts.push(items);
        items += row_blocks * n.div_ceil(NB);
    }
    let work = |range: std::ops::Range<usize>| {
        for item in range {
            let i = firsts.partition_point(|f| *f <= item) - 1;
            let (w, n) = ws[i];
            let local = item - firsts[i];
            let (cb, rb) = (local / row_blocks, local % row_blocks);
            let rows = rb * MB..((rb + 1) * MB).min(m);
            let cols = cb * NB..((cb + 1) * NB).min(n);
            // Where weight value (column j, step kk) lies: `j·col_stride + kk·k_stride`.
            let strides = match layout {
                Weight::NByK => (k, 1),
                Weight::KByN => (1, n),
            };
            // SAFETY: AVX-512 F was detected above; every (row, col) output of this item lies
            // in `rows × cols` of output `i`, which no other item covers, inside that output's
            // capacity (m·n), and the outputs outlive the blocking `execute_chunked`; reads
            // stay within `packed` and `w` (asserted: every (j < n, kk < k) is below n·k).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx512::block(
                    &packed,
                    w,
                    strides,
                    y_addrs[i] as *mut f32,
                    m,
                    n,
                    k,
                    rows,
                    cols,
                )
            };
        }
    };
    candle_core::utils::barrier_pool().execute_chunked(items, work);
    for (y, (_, n)) in ys.iter_mut().zip(ws) {
        // SAFETY: the items cover every (row, col) of `m × n` (rows in blocks of MB, columns
        // in blocks of NB, each output written once by `block`), so all of `y` is initialised.
        unsafe { y.set_len(m * n) };
    }
    Some(ys)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{KC, MP, NR, PANEL};
    use std::arch::x86_64::*;

    /// One work item: outputs `rows × cols` of `y` (`m` rows, row stride `n`); `rows.start`
    /// is a multiple of 16.
    ///
    /// Weight value (column `j`, step `kk`) is `w[j·strides.0 + kk·strides.1]`.
    ///
    /// # Safety
    /// AVX-512 F must be available; `rows × cols` must lie inside `y`'s `m × n` and belong to
    /// this call alone; `packed` holds the panels of `rows`, `w` holds every value of columns
    /// `..cols.end` and steps `..k` at those strides.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn block(
        packed: &[f32],
        w: &[f32],
        strides: (usize, usize),
        y: *mut f32,
        m: usize,
        n: usize,
        k: usize,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
    ) {
        let row_end = rows.end.min(m);
        // Steps in chunks of KC, the first written and the others added, so that a long
        // reduction (the output head's backward sums over 49152 vocabulary entries) keeps
        // its packed rows and weight strip in cache.
        let mut k0 = 0;
        while k0 < k {
            let ks = k0..(k0 + KC).min(k);
            let mut j = cols.start;
            while j < cols.end {
                let nr = (cols.end - j).min(NR);
                let mut p = rows.start / PANEL;
                let last_panel = rows.end.div_ceil(PANEL);
                while p < last_panel {
                    let mp = (last_panel - p).min(MP);
                    // SAFETY: panels p..p+mp and weight columns j..j+nr exist, and the outputs
                    // written lie in this item's `rows × cols` (the caller's bounds); with
                    // `k0 > 0` they were written by the first chunk.
                    unsafe {
                        let out = Out {
                            y,
                            n,
                            row0: p * PANEL,
                            row_end,
                            cols: nr,
                            add: k0 > 0,
                        };
                        let wt = Tile {
                            w,
                            strides,
                            j,
                            k,
                            ks: ks.clone(),
                        };
                        match (mp, nr) {
                            (MP, NR) => kernel::<MP, NR>(packed, wt, p, out),
                            (1, NR) => kernel::<1, NR>(packed, wt, p, out),
                            (MP, _) => kernel::<MP, 1>(packed, wt, p, out),
                            _ => kernel::<1, 1>(packed, wt, p, out),
                        }
                    }
                    p += mp;
                }
                j += nr;
            }
            k0 = ks.end;
        }
    }

    /// Where a register tile goes: rows `row0..row_end` (at most the tile's) of the tile's
    /// `cols` columns of `y` (row stride `n`).
    #[derive(Clone, Copy)]
    struct Out {
        y: *mut f32,
        n: usize,
        row0: usize,
        row_end: usize,
        cols: usize,
        /// Add to what `y` holds (a later chunk of steps) instead of writing.
        add: bool,
    }

    /// The weight columns of a register tile: column `j + c` at step `kk` is
    /// `w[(j + c)·strides.0 + kk·strides.1]`, for `kk < k`; this call sums steps `ks`.
    #[derive(Clone)]
    struct Tile<'a> {
        w: &'a [f32],
        strides: (usize, usize),
        j: usize,
        k: usize,
        ks: std::ops::Range<usize>,
    }

    /// `P` panels by `C` weight columns, written to `out`: `y[(p + q)·16 + r, j + c] =
    /// x[(p + q)·16 + r] · w[j + c]`. With `C == 1` and `out.cols > 1`, the columns
    /// `j..j + out.cols` are done one after another.
    ///
    /// # Safety
    /// AVX-512 F; panels `p..p+P` of `packed` and columns `j..j + max(C, out.cols)` of `w`
    /// exist; `out` lies inside `y` and belongs to the caller.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn kernel<const P: usize, const C: usize>(packed: &[f32], wt: Tile, p: usize, out: Out) {
        let (k, (sj, sk)) = (wt.k, wt.strides);
        let columns = if C == 1 { out.cols } else { 1 };
        for step in 0..columns {
            let j = wt.j + step;
            let xp = packed.as_ptr().wrapping_add(p * k * PANEL);
            let wp = wt.w.as_ptr().wrapping_add(j * sj);
            let mut acc = [[_mm512_setzero_ps(); P]; C];
            for kk in wt.ks.clone() {
                // SAFETY: kk < k: within each panel and each weight column.
                let xv: [__m512; P] = std::array::from_fn(|q| unsafe {
                    _mm512_loadu_ps(xp.add((q * k + kk) * PANEL))
                });
                let wk = wp.wrapping_add(kk * sk);
                for (c, acc_c) in acc.iter_mut().enumerate() {
                    let wv = _mm512_set1_ps(unsafe { *wk.add(c * sj) });
                    for (a, x) in acc_c.iter_mut().zip(&xv) {
                        *a = _mm512_fmadd_ps(*x, wv, *a);
                    }
                }
            }
            let width = if C == 1 { 1 } else { out.cols };
            let mask: __mmask16 = (1u32 << width).wrapping_sub(1) as __mmask16;
            for q in 0..P {
                let row0 = out.row0 + q * PANEL;
                if row0 >= out.row_end {
                    break;
                }
                // Lanes are rows, vectors are columns: transposed, vector r holds row r's
                // columns (the first `width` lanes).
                let mut t = [_mm512_setzero_ps(); PANEL];
                for (c, acc_c) in acc.iter().enumerate() {
                    t[c] = acc_c[q];
                }
                let rows = transpose16(t);
                for (r, v) in rows.iter().enumerate().take(out.row_end - row0) {
                    // SAFETY: row row0 + r < row_end and columns j..j + width are the tile's.
                    unsafe {
                        let dst = out.y.add((row0 + r) * out.n + j);
                        let v = if out.add {
                            _mm512_add_ps(_mm512_maskz_loadu_ps(mask, dst), *v)
                        } else {
                            *v
                        };
                        _mm512_mask_storeu_ps(dst, mask, v);
                    }
                }
            }
        }
    }

    /// The first `k / 16 · 16` steps of a full panel: `panel[kk·16 + r] = x[r·k + kk]` for
    /// the 16 rows, a 16 × 16 block at a time through [`transpose16`] (the scalar loop's
    /// strided stores took 3–4% of a training step). Returns the steps done.
    ///
    /// # Safety
    /// AVX-512 F; `x` holds 16 rows of `k` floats, `panel` `k·16` floats.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn pack_panel(x: &[f32], k: usize, panel: &mut [f32]) -> usize {
        let full = k / PANEL * PANEL;
        for kk in (0..full).step_by(PANEL) {
            // SAFETY: rows r < 16 of `x` have steps kk..kk + 16 <= k; the stores land in
            // steps kk..kk + 16 of the panel.
            unsafe {
                let v: [__m512; PANEL] =
                    std::array::from_fn(|r| _mm512_loadu_ps(x.as_ptr().add(r * k + kk)));
                for (c, t) in transpose16(v).iter().enumerate() {
                    _mm512_storeu_ps(panel.as_mut_ptr().add((kk + c) * PANEL), *t);
                }
            }
        }
        full
    }

    /// Transpose of a 16 × 16 block held in 16 vectors (`out[r][c] = v[c][r]`): the usual
    /// four stages of 32-, 64- and twice 128-bit interleaves.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose16(v: [__m512; PANEL]) -> [__m512; PANEL] {
        // Stage 1: pairs of rows interleaved by 32-bit elements.
        let mut a = [_mm512_setzero_ps(); PANEL];
        for i in 0..8 {
            a[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
            a[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
        }
        // Stage 2: pairs of pairs by 64-bit elements.
        let mut b = [_mm512_setzero_ps(); PANEL];
        for i in 0..4 {
            for h in 0..2 {
                let (x, y) = (
                    _mm512_castps_pd(a[4 * i + h]),
                    _mm512_castps_pd(a[4 * i + 2 + h]),
                );
                b[4 * i + h] = _mm512_castpd_ps(_mm512_unpacklo_pd(x, y));
                b[4 * i + 2 + h] = _mm512_castpd_ps(_mm512_unpackhi_pd(x, y));
            }
        }
        // Stage 3: 128-bit lanes of groups of four rows, then stage 4 of groups of eight.
        let mut c = [_mm512_setzero_ps(); PANEL];
        for i in 0..2 {
            for h in 0..4 {
                let (x, y) = (b[8 * i + h], b[8 * i + 4 + h]);
                c[8 * i + h] = _mm512_shuffle_f32x4::<0x88>(x, y);
                c[8 * i + 4 + h] = _mm512_shuffle_f32x4::<0xdd>(x, y);
            }
        }
        let mut d = [_mm512_setzero_ps(); PANEL];
        for h in 0..8 {
            let (x, y) = (c[h], c[8 + h]);
            d[h] = _mm512_shuffle_f32x4::<0x88>(x, y);
            d[8 + h] = _mm512_shuffle_f32x4::<0xdd>(x, y);
        }
        // After stage 2 the rows within each group of four come out as 0, 2, 1, 3.
        let mut out = [_mm512_setzero_ps(); PANEL];
        for (r, o) in out.iter_mut().enumerate() {
            *o = d[ROW_ORDER[r]];
        }
        out
    }

    /// Which stage-4 vector holds row `r` of the transpose.
    const ROW_ORDER: [usize; PANEL] = [0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15];
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        crate::rng::XorShift64Star::new(seed).uniform(n, 1.0)
    }

    #[test]
    fn the_kernel_matches_candles_matmul_on_every_edge() -> candle_core::Result<()> {
        if !available() {
            assert!(matmul_nt(&[0.0], &[0.0], 1, 1, 1).is_none());
            return Ok(());
        }
        // Full tiles, partial tiles in both directions, k with and without a tail, blocks.
        for (m, n, k) in [
            (1, 1, 1),
            (4, 6, 16),
            (7, 13, 37),
            (33, 97, 64),
            (70, 200, 576),
            (5, 3, 1537),
        ] {
            let x = random(m * k, 1 + m as u64);
            let w = random(n * k, 2 + n as u64);
            let ours = matmul_nt(&x, &w, m, n, k).expect("avx-512");
            let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu)?;
            let wt = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu)?;
            let candle = xt.matmul(&wt.t()?)?.flatten_all()?.to_vec1::<f32>()?;
            // Against the exact sums (f64), in units of the sum of |x·w| (the scale of an
            // f32 dot product's rounding error), ours and candle's.
            let (mut worst, mut candle_worst) = (0f64, 0f64);
            for i in 0..m {
                for j in 0..n {
                    let (xr, wr) = (&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
                    let exact: f64 = xr
                        .iter()
                        .zip(wr)
                        .map(|(a, b)| f64::from(*a) * f64::from(*b))
                        .sum();
                    let scale: f64 = xr
                        .iter()
                        .zip(wr)
                        .map(|(a, b)| f64::from((a * b).abs()))
                        .sum();
                    let err = |v: f32| (f64::from(v) - exact).abs() / scale.max(1e-30);
                    worst = worst.max(err(ours[i * n + j]));
                    candle_worst = candle_worst.max(err(candle[i * n + j]));
                }
            }
            assert!(
                worst < 2e-6,
                "[{m}, {k}] x [{n}, {k}]^T: error {worst:e} (candle's {candle_worst:e})"
            );
        }
        Ok(())
    }

    #[test]
    fn the_untransposed_product_matches_candles_matmul() -> candle_core::Result<()> {
        if !available() {
            assert!(matmul_nn(&[0.0], &[0.0], 1, 1, 1).is_none());
            return Ok(());
        }
        for (m, n, k) in [
            (1, 1, 1),
            (7, 13, 37),
            (33, 97, 64),
            (70, 200, 576),
            (17, 576, 1537),
        ] {
            let x = random(m * k, 3 + m as u64);
            let w = random(k * n, 4 + n as u64);
            let ours = matmul_nn(&x, &w, m, n, k).expect("avx-512");
            let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu)?;
            let wt = Tensor::from_vec(w.clone(), (k, n), &Device::Cpu)?;
            let candle = xt.matmul(&wt)?.flatten_all()?.to_vec1::<f32>()?;
            let (mut worst, mut candle_worst) = (0f64, 0f64);
            for i in 0..m {
                for j in 0..n {
                    let terms =
                        (0..k).map(|kk| f64::from(x[i * k + kk]) * f64::from(w[kk * n + j]));
                    let exact: f64 = terms.clone().sum();
                    let scale: f64 = terms.map(f64::abs).sum();
                    let err = |v: f32| (f64::from(v) - exact).abs() / scale.max(1e-30);
                    worst = worst.max(err(ours[i * n + j]));
                    candle_worst = candle_worst.max(err(candle[i * n + j]));
                }
            }
            assert!(
                worst < 2e-6,
                "[{m}, {k}] x [{k}, {n}]: error {worst:e} (candle's {candle_worst:e})"
            );
        }
        Ok(())
    }
}
