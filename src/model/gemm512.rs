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
            for r in 0..rows {
                let row = &x[(p * PANEL + r) * k..(p * PANEL + r + 1) * k];
                for (kk, v) in row.iter().enumerate() {
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
    if !available() {
        return None;
    }
    assert!(
        x.len() >= m * k && w.len() >= n * k,
        "matmul_nt: short input"
    );
    let packed = pack(x, m, k);
    let mut y: Vec<f32> = Vec::with_capacity(m * n);
    let y_addr = y.as_mut_ptr() as usize;
    let row_blocks = m.div_ceil(MB);
    let col_blocks = n.div_ceil(NB);
    let work = |items: std::ops::Range<usize>| {
        for item in items {
            let (cb, rb) = (item / row_blocks, item % row_blocks);
            let rows = rb * MB..((rb + 1) * MB).min(m);
            let cols = cb * NB..((cb + 1) * NB).min(n);
            // SAFETY: AVX-512 F was detected above; every (row, col) output of this item lies
            // in `rows × cols`, which no other item covers, inside `y`'s capacity (m·n), and
            // `y` outlives the blocking `execute_chunked`; reads stay within `packed` and `w`
            // (asserted).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx512::block(&packed, w, y_addr as *mut f32, m, n, k, rows, cols)
            };
        }
    };
    candle_core::utils::barrier_pool().execute_chunked(row_blocks * col_blocks, work);
    // SAFETY: the items cover every (row, col) of `m × n` (rows in blocks of MB, columns in
    // blocks of NB, each output written once by `block`), so all of `y` is initialised.
    unsafe { y.set_len(m * n) };
    Some(y)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{MP, NR, PANEL};
    use std::arch::x86_64::*;

    /// One work item: outputs `rows × cols` of `y` (`m` rows, row stride `n`); `rows.start`
    /// is a multiple of 16.
    ///
    /// # Safety
    /// AVX-512 F must be available; `rows × cols` must lie inside `y`'s `m × n` and belong to
    /// this call alone; `packed` holds the panels of `rows`, `w` holds `cols.end` rows of `k`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn block(
        packed: &[f32],
        w: &[f32],
        y: *mut f32,
        m: usize,
        n: usize,
        k: usize,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
    ) {
        let mut j = cols.start;
        while j < cols.end {
            let nr = (cols.end - j).min(NR);
            let mut p = rows.start / PANEL;
            let last_panel = rows.end.div_ceil(PANEL);
            while p < last_panel {
                let mp = (last_panel - p).min(MP);
                let mut tile = [[[0f32; PANEL]; MP]; NR];
                // SAFETY: panels p..p+mp and weight rows j..j+nr exist (the caller's bounds).
                unsafe {
                    match (mp, nr) {
                        (MP, NR) => kernel::<MP, NR>(packed, w, p, j, k, &mut tile),
                        (1, NR) => kernel::<1, NR>(packed, w, p, j, k, &mut tile),
                        _ => {
                            for (c, per_panel) in tile.iter_mut().enumerate().take(nr) {
                                let mut one = [[[0f32; PANEL]; MP]; NR];
                                for (q, lanes) in per_panel.iter_mut().enumerate().take(mp) {
                                    kernel::<1, 1>(packed, w, p + q, j + c, k, &mut one);
                                    *lanes = one[0][0];
                                }
                            }
                        }
                    }
                }
                for (c, per_panel) in tile.iter().enumerate().take(nr) {
                    for (q, lanes) in per_panel.iter().enumerate().take(mp) {
                        let row0 = (p + q) * PANEL;
                        for (r, v) in lanes.iter().enumerate().take(m.min(rows.end) - row0.min(m)) {
                            // SAFETY: (row0 + r, j + c) is inside this item's block (caller).
                            unsafe { *y.add((row0 + r) * n + j + c) = *v };
                        }
                    }
                }
                p += mp;
            }
            j += nr;
        }
    }

    /// `P` panels by `C` weight rows: `tile[c][q][r] = x[(p + q)·16 + r] · w[j + c]`.
    ///
    /// # Safety
    /// AVX-512 F; panels `p..p+P` of `packed` and rows `j..j+C` of `w` exist.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn kernel<const P: usize, const C: usize>(
        packed: &[f32],
        w: &[f32],
        p: usize,
        j: usize,
        k: usize,
        tile: &mut [[[f32; PANEL]; MP]; NR],
    ) {
        let xp = packed.as_ptr().wrapping_add(p * k * PANEL);
        let wp = w.as_ptr().wrapping_add(j * k);
        let mut acc = [[_mm512_setzero_ps(); P]; C];
        for kk in 0..k {
            // SAFETY: kk < k: within each panel and each weight row.
            let xv: [__m512; P] =
                std::array::from_fn(|q| unsafe { _mm512_loadu_ps(xp.add((q * k + kk) * PANEL)) });
            for (c, acc_c) in acc.iter_mut().enumerate() {
                let wv = _mm512_set1_ps(unsafe { *wp.add(c * k + kk) });
                for (a, x) in acc_c.iter_mut().zip(&xv) {
                    *a = _mm512_fmadd_ps(*x, wv, *a);
                }
            }
        }
        for (out, a) in tile.iter_mut().zip(&acc) {
            for (o, v) in out.iter_mut().zip(a) {
                // SAFETY: `o` is 16 floats.
                unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *v) };
            }
        }
    }
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
}
