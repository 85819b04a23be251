//! Q4_1 matrix multiplication on the CPU, bit-identical to candle's, with AVX-512 VNNI,
//! AVX-512 BW and AVX2 kernels chosen at run time.
//!
//! candle 0.11.1 multiplies Q4_1 blocks with a scalar loop (`BlockQ4_1::vec_dot_unopt`),
//! several times slower than llama.cpp's `ggml_vec_dot_q4_1_q8_1`. This module follows
//! ggml's method (activations quantized to Q8_1 blocks of 32; weights as 4-bit values with
//! a scale `d` and a minimum `m` per block) but keeps candle's arithmetic exactly:
//! - the integer dot product of each block pair is exact in any order;
//! - the float accumulation `sum += sumi·dₓ·d_y + mₓ·s_y` runs per output in block order,
//!   lane by lane, without fused multiply-add, exactly as candle's scalar loop does.
//!
//! So logits match candle-transformers' `quantized_llama` bit for bit (tests/real_model.rs,
//! a token at a time), whichever kernel runs.
//!
//! **Layout.** The weights are repacked on load into tiles of 16 output rows (as llama.cpp's
//! CPU "repack" formats interleave rows, e.g. `block_q4_0x8`): for each tile and block of 32
//! inputs, 256 bytes of nibbles then the 16 rows' `d` and `m` (f16, as in the file, so the
//! tile takes ggml's 20 bytes a block and row). The nibbles are in 4 chunks of 64 bytes; in
//! chunk `c`, bytes `4i..4i + 4` are row `i`'s ggml bytes `qs[4c..4c + 4]` (low nibbles: values
//! `4c..4c + 4`, high nibbles: values `16 + 4c..16 + 4c + 4`). One 512-bit load then holds 4
//! consecutive values of 16 rows, and a 4-byte broadcast of the activations multiplies all
//! of them: `vpdpbusd` (VNNI) or `vpmaddubsw` + `vpmaddwd` leave each row's sum in its own
//! 32-bit lane, with no horizontal sums, and `d`, `m` of 16 rows are one load each. Up to 4
//! activation rows share each load of the weights (batched decode).
//!
//! **Dispatch** ([`Kernel::detected`]): AVX-512 VNNI (with BW) where present, else AVX-512
//! BW, else AVX2 (with F16C), else the scalar loop; `BIOINSTRUCT_NO_AVX512=1` keeps it to
//! AVX2, as for [`super::gemm512`]. The tests run every kernel the CPU has against the scalar
//! one and candle's on random blocks, and check the choice on made-up CPUs.
//!
//! A prompt's many rows at once ([`DEQUANT_MIN_ROWS`] or more) take another road: the
//! weights are dequantized to f32 (`d·q + m`, as ggml's `dequantize_row_q4_1`) and
//! multiplied by the unquantized activations with [`super::gemm512`] (candle's f32 matmul
//! where the CPU has no AVX-512). The integer kernel reads every weight block once per 4
//! rows; a float GEMM reuses each tile across many rows: 961 prompt tokens of SmolLM2-135M
//! took 5.8 s the integer way and about 1 s through `gemm512` (AMD EPYC, 2 cores).
//! Activations are not rounded to 8 bits on this road, so it is nearer the float function
//! than the integer one.
//!
//! One of the modules where `unsafe` is allowed: the SIMD intrinsics and the disjoint writes
//! of the thread pool's work items.
#![allow(unsafe_code)]

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape};
use half::f16;

/// Values per block (ggml's `QK4_1` and `QK8_1`).
pub const BLOCK: usize = 32;

/// From this many activation rows (a prompt, not a decode step) on, the product runs on
/// dequantized weights through a float GEMM ([`super::gemm512`]'s own minimum).
pub const DEQUANT_MIN_ROWS: usize = 16;

/// Output rows (weight rows) in a tile.
pub(super) const TILE: usize = 16;

/// Activation rows that share one pass over the weights.
pub(super) const ROWS: usize = 4;

/// One block of 32 inputs of a tile of 16 weight rows (see the module's layout notes).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct TileBlock {
    /// 4 chunks of 64 bytes: in chunk `c`, row `i`'s ggml bytes `qs[4c..4c + 4]`.
    qs: [u8; 256],
    /// Each row's scale.
    d: [f16; TILE],
    /// Each row's minimum.
    m: [f16; TILE],
}

impl TileBlock {
    const ZERO: TileBlock = TileBlock {
        qs: [0; 256],
        d: [f16::ZERO; TILE],
        m: [f16::ZERO; TILE],
    };

    /// Row `i`'s nibble byte `j` (ggml's `qs[j]`: value `j` low, value `j + 16` high).
    fn byte(&self, i: usize, j: usize) -> u8 {
        self.qs[(j / 4) * 64 + i * 4 + j % 4]
    }
}

/// An activation block quantized to Q8_1: 32 values `d·q`, and `s = d·Σq` (rounded through
/// f16 as ggml stores it).
#[derive(Debug, Clone, Copy)]
struct ActBlock {
    d: f32,
    s: f32,
    qs: [i8; 32],
}

/// Which kernel multiplies Q4_1 blocks: the widest the CPU has ([`Kernel::detected`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// candle's scalar loop, everywhere.
    Scalar,
    /// 8 rows a vector: `vpmaddubsw` + `vpmaddwd` on 256 bits (AVX2 and F16C).
    Avx2,
    /// 16 rows a vector: `vpmaddubsw` + `vpmaddwd` on 512 bits (AVX-512 F and BW).
    Avx512,
    /// 16 rows a vector: `vpdpbusd` on 512 bits (AVX-512 F, BW and VNNI).
    Avx512Vnni,
}

impl Kernel {
    /// Every kernel, narrowest first.
    pub const ALL: [Kernel; 4] = [
        Kernel::Scalar,
        Kernel::Avx2,
        Kernel::Avx512,
        Kernel::Avx512Vnni,
    ];

    /// The kernel for this CPU, detected once: the widest it supports, at most AVX2 when
    /// `BIOINSTRUCT_NO_AVX512` is `1` ([`super::gemm512::DISABLE_ENV`]).
    pub fn detected() -> Kernel {
        static DETECTED: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            let no_avx512 = std::env::var(super::gemm512::DISABLE_ENV).is_ok_and(|v| v == "1");
            Kernel::choose(no_avx512, cpu_has)
        })
    }

    /// The widest kernel that a CPU with the features `has` reports can run (`no_avx512`
    /// leaves out the 512-bit ones).
    fn choose(no_avx512: bool, has: impl Fn(&str) -> bool) -> Kernel {
        let all = |names: &[&str]| names.iter().all(|n| has(n));
        let avx512 = !no_avx512 && all(&["avx512f", "avx512bw", "f16c"]);
        if avx512 && has("avx512vnni") {
            Kernel::Avx512Vnni
        } else if avx512 {
            Kernel::Avx512
        } else if all(&["avx2", "f16c"]) {
            Kernel::Avx2
        } else {
            Kernel::Scalar
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn runs_here(self) -> bool {
        Kernel::choose(false, cpu_has) as u8 >= self as u8
    }
}

/// Whether the CPU reports the x86 feature `name` (one of those [`Kernel::choose`] asks).
fn cpu_has(name: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match name {
            "avx2" => std::is_x86_feature_detected!("avx2"),
            "f16c" => std::is_x86_feature_detected!("f16c"),
            "avx512f" => std::is_x86_feature_detected!("avx512f"),
            "avx512bw" => std::is_x86_feature_detected!("avx512bw"),
            "avx512vnni" => std::is_x86_feature_detected!("avx512vnni"),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = name;
        false
    }
}

/// A Q4_1 weight matrix `[n, k]` (out_features × in_features), as a candle custom op that
/// multiplies activations `[.., k]` into `[.., n]`.
#[derive(Debug, Clone)]
pub struct Q4_1Matrix {
    /// `n.div_ceil(16)` tiles of `k / 32` blocks, tile-major; rows past `n` are zero.
    tiles: Vec<TileBlock>,
    n: usize,
    k: usize,
}

impl Q4_1Matrix {
    /// Parses ggml's Q4_1 bytes (20 bytes a block: f16 `d`, f16 `m`, 16 bytes of nibbles)
    /// for a matrix of `n` rows of `k` values, into tiles of 16 rows.
    ///
    /// # Errors
    /// When `k` is not a multiple of 32 or the byte count does not match.
    pub fn from_ggml_bytes(bytes: &[u8], n: usize, k: usize) -> Result<Q4_1Matrix> {
        if !k.is_multiple_of(BLOCK) || bytes.len() != n * (k / BLOCK) * 20 {
            candle_core::bail!(
                "Q4_1 data of {} bytes does not hold a [{n}, {k}] matrix",
                bytes.len()
            );
        }
        let kb = k / BLOCK;
        let mut tiles = vec![TileBlock::ZERO; n.div_ceil(TILE) * kb];
        for (row, blocks) in bytes.chunks_exact(kb * 20).enumerate() {
            let (t, i) = (row / TILE, row % TILE);
            for (b, src) in blocks.chunks_exact(20).enumerate() {
                let tile = &mut tiles[t * kb + b];
                tile.d[i] = f16::from_le_bytes([src[0], src[1]]);
                tile.m[i] = f16::from_le_bytes([src[2], src[3]]);
                for c in 0..4 {
                    tile.qs[c * 64 + i * 4..c * 64 + i * 4 + 4]
                        .copy_from_slice(&src[4 + 4 * c..8 + 4 * c]);
                }
            }
        }
        Ok(Q4_1Matrix { tiles, n, k })
    }

    /// Output width (rows of the weight).
    pub fn out_features(&self) -> usize {
        self.n
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.k
    }

    fn tile(&self, t: usize) -> &[TileBlock] {
        let kb = self.k / BLOCK;
        &self.tiles[t * kb..(t + 1) * kb]
    }

    /// The weights as f32 `[n, k]`, row-major (ggml's `dequantize_row_q4_1`: value `j` of a
    /// block is `d·(qs[j] & 15) + m`, value `j + 16` is `d·(qs[j] >> 4) + m`), one tile per
    /// work item on candle's thread pool.
    fn dequantize(&self) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        let mut w = vec![0f32; n * k];
        let addr = w.as_mut_ptr() as usize;
        candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(TILE), |tiles| {
            for t in tiles {
                let rows = t * TILE..((t + 1) * TILE).min(n);
                // SAFETY: tile t owns rows `rows` of `w`, `w[rows.start·k .. rows.end·k]`, in
                // bounds since rows.end <= n; each item goes to exactly one call, and `w`
                // outlives the blocking call.
                let out = unsafe {
                    std::slice::from_raw_parts_mut(
                        (addr as *mut f32).add(rows.start * k),
                        rows.len() * k,
                    )
                };
                for (i, row) in out.chunks_exact_mut(k).enumerate() {
                    for (b, chunk) in self.tile(t).iter().zip(row.chunks_exact_mut(BLOCK)) {
                        let (d, m) = (b.d[i].to_f32(), b.m[i].to_f32());
                        let (lo, hi) = chunk.split_at_mut(BLOCK / 2);
                        for (j, (l, h)) in lo.iter_mut().zip(hi).enumerate() {
                            let q = b.byte(i, j);
                            *l = f32::from(q & 15) * d + m;
                            *h = f32::from(q >> 4) * d + m;
                        }
                    }
                }
            }
        });
        w
    }

    /// Multiplies `m` rows of `k` activations into `[m, n]` with `kernel` (which must run on
    /// this CPU: [`Kernel::runs_here`]).
    fn matmul(&self, lhs: &[f32], m: usize, kernel: Kernel) -> Vec<f32> {
        let kb = self.k / BLOCK;
        let act: Vec<ActBlock> = lhs
            .chunks_exact(self.k)
            .take(m)
            .flat_map(quantize_row_q8_1)
            .collect();
        tiled_matmul(&act, kb, self.n, |t, acts, sums| {
            tile_dot(kernel, self.tile(t), acts, sums);
        })
    }
}

/// Sums of one tile: up to [`ROWS`] activation rows of [`TILE`] columns.
pub(super) type TileSums = [[f32; TILE]; ROWS];

/// The `[m, n]` product of a matrix kept in tiles of [`TILE`] weight rows by `m` rows of
/// quantized activations (`act`, `kb` blocks a row): `tile(t, acts, sums)` writes into
/// `sums[i][c]` the products of `acts[i]` (1 to [`ROWS`] rows) with tile `t`'s rows (output
/// columns `16t + c`; those past `n` are dropped). Each work item on candle's own thread pool
/// is a tile by up to [`ROWS`] rows, so the rows share each load of the weights: one dispatch
/// per matmul, and no second pool of spinning threads competing with candle's.
pub(super) fn tiled_matmul<A: Sync>(
    act: &[A],
    kb: usize,
    n: usize,
    tile: impl Fn(usize, &[&[A]], &mut TileSums) + Sync,
) -> Vec<f32> {
    let m = act.len() / kb.max(1);
    let mut dst = vec![0f32; m * n];
    let row_groups = m.div_ceil(ROWS);
    let dst_addr = dst.as_mut_ptr() as usize;
    let work = |range: std::ops::Range<usize>| {
        for item in range {
            let (t, g) = (item / row_groups, item % row_groups);
            let rows = g * ROWS..((g + 1) * ROWS).min(m);
            let cols = t * TILE..((t + 1) * TILE).min(n);
            let acts: [&[A]; ROWS] = std::array::from_fn(|i| {
                let r = (rows.start + i).min(m - 1);
                &act[r * kb..(r + 1) * kb]
            });
            let mut sums = [[0f32; TILE]; ROWS];
            tile(t, &acts[..rows.len()], &mut sums);
            for (r, s) in rows.zip(&sums) {
                // SAFETY: item (t, g) owns `dst[r·n + cols]` for its rows `r`, in bounds since
                // r < m and cols.end <= n; `execute_chunked` hands each item to exactly one
                // call, and `dst` outlives the blocking call.
                let out = unsafe {
                    std::slice::from_raw_parts_mut(
                        (dst_addr as *mut f32).add(r * n + cols.start),
                        cols.len(),
                    )
                };
                out.copy_from_slice(&s[..cols.len()]);
            }
        }
    };
    candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(TILE) * row_groups, work);
    dst
}

/// A quantized matrix op's `cpu_fwd` around `product(x, m)` (`m` rows of `k` contiguous f32
/// activations into `[m, n]`): checks the input (f32, contiguous, last dimension `k`, else
/// an error naming `op`) and gives the output the input's shape with `n` last.
pub(super) fn quantized_fwd(
    op: &str,
    (n, k): (usize, usize),
    storage: &CpuStorage,
    layout: &Layout,
    product: impl FnOnce(&[f32], usize) -> Result<Vec<f32>>,
) -> Result<(CpuStorage, Shape)> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op} takes f32 activations");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} takes contiguous activations");
    };
    let mut dims = layout.shape().dims().to_vec();
    if dims.last() != Some(&k) {
        candle_core::bail!("{op}: activations {dims:?} do not end in {k}");
    }
    let out = product(&data[start..end], layout.shape().elem_count() / k)?;
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    Ok((CpuStorage::F32(out), Shape::from(dims)))
}

/// The 16 dot products of a tile's rows with each of `acts` (1 to 4 rows of activation
/// blocks), into `sums[r]`, with `kernel`.
fn tile_dot(kernel: Kernel, tile: &[TileBlock], acts: &[&[ActBlock]], sums: &mut [[f32; TILE]]) {
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! by_rows {
            ($f:ident) => {
                // SAFETY: the caller chose a kernel that runs on this CPU (`Kernel::runs_here`);
                // `acts` has 1 to 4 rows of the tile's blocks and `sums` one entry per row.
                unsafe {
                    match acts.len() {
                        1 => x86::$f::<1>(tile, acts, sums),
                        2 => x86::$f::<2>(tile, acts, sums),
                        3 => x86::$f::<3>(tile, acts, sums),
                        _ => x86::$f::<4>(tile, acts, sums),
                    }
                }
            };
        }
        match kernel {
            Kernel::Avx512Vnni => return by_rows!(tile_avx512_vnni),
            Kernel::Avx512 => return by_rows!(tile_avx512_bw),
            Kernel::Avx2 => return by_rows!(tile_avx2),
            Kernel::Scalar => {}
        }
    }
    let _ = kernel;
    for (act, s) in acts.iter().zip(sums.iter_mut()) {
        for (i, o) in s.iter_mut().enumerate() {
            *o = dot_scalar(tile, i, act);
        }
    }
}

/// ggml's `quantize_row_q8_1` as candle 0.11.1 computes it (`BlockQ8_1::from_float`).
fn quantize_row_q8_1(xs: &[f32]) -> Vec<ActBlock> {
    xs.chunks_exact(BLOCK)
        .map(|x| {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let d16 = f16::from_f32(d);
            let mut qs = [0i8; 32];
            let mut sum = 0i32;
            for j in 0..BLOCK / 2 {
                qs[j] = (x[j] * id).round() as i8;
                qs[j + BLOCK / 2] = (x[j + BLOCK / 2] * id).round() as i8;
                sum += qs[j] as i32 + qs[j + BLOCK / 2] as i32;
            }
            ActBlock {
                d: d16.to_f32(),
                s: (f16::from_f32(sum as f32) * d16).to_f32(),
                qs,
            }
        })
        .collect()
}

/// candle's `BlockQ4_1::vec_dot_unopt` for row `i` of a tile.
fn dot_scalar(tile: &[TileBlock], i: usize, a: &[ActBlock]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in tile.iter().zip(a) {
        let mut sumi = 0i32;
        for j in 0..BLOCK / 2 {
            let q = x.byte(i, j);
            let v0 = (q & 0x0F) as i32;
            let v1 = (q >> 4) as i32;
            sumi += v0 * y.qs[j] as i32 + v1 * y.qs[j + BLOCK / 2] as i32;
        }
        sumf += sumi as f32 * x.d[i].to_f32() * y.d + x.m[i].to_f32() * y.s;
    }
    sumf
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{ActBlock, TileBlock, ROWS, TILE};
    use std::arch::x86_64::*;

    /// Activation bytes `j..j + 4` of a block as one 32-bit value (to broadcast).
    #[inline(always)]
    fn quad(y: &ActBlock, j: usize) -> i32 {
        i32::from_le_bytes([
            y.qs[j] as u8,
            y.qs[j + 1] as u8,
            y.qs[j + 2] as u8,
            y.qs[j + 3] as u8,
        ])
    }

    /// Each 32-bit lane of `acc` plus the dot product of its 4 unsigned bytes of `w` with the
    /// 4 signed bytes of `a`: `vpdpbusd` with VNNI, else `vpmaddubsw` (u8·i8 pairs into i16:
    /// at most 2·15·127, no saturation) and `vpmaddwd` by 1.
    #[inline(always)]
    fn dot4_512<const VNNI: bool>(acc: __m512i, w: __m512i, a: __m512i) -> __m512i {
        // SAFETY (of the intrinsics): the callers enable avx512f, avx512bw and, with VNNI,
        // avx512vnni; inlined into them.
        unsafe {
            if VNNI {
                _mm512_dpbusd_epi32(acc, w, a)
            } else {
                let pairs = _mm512_maddubs_epi16(w, a);
                _mm512_add_epi32(acc, _mm512_madd_epi16(pairs, _mm512_set1_epi16(1)))
            }
        }
    }

    /// [`super::tile_dot`] with `vpdpbusd`: lane `i` of each 512-bit vector is the tile's row
    /// `i`.
    ///
    /// # Safety
    /// AVX-512 F, BW, VNNI and F16C; `acts.len() == R <= 4`, each holding the tile's blocks;
    /// `sums.len() >= R`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    pub(super) unsafe fn tile_avx512_vnni<const R: usize>(
        tile: &[TileBlock],
        acts: &[&[ActBlock]],
        sums: &mut [[f32; TILE]],
    ) {
        // SAFETY: the features `tile_avx512` needs are enabled here; the rest is the caller's.
        unsafe { tile_avx512::<true, R>(tile, acts, sums) }
    }

    /// [`super::tile_dot`] with `vpmaddubsw` and `vpmaddwd` on 512 bits, for AVX-512 without
    /// VNNI (compiled without it, so that no VNNI instruction can slip in).
    ///
    /// # Safety
    /// AVX-512 F, BW and F16C; as [`tile_avx512_vnni`] otherwise.
    #[target_feature(enable = "avx512f,avx512bw,f16c")]
    pub(super) unsafe fn tile_avx512_bw<const R: usize>(
        tile: &[TileBlock],
        acts: &[&[ActBlock]],
        sums: &mut [[f32; TILE]],
    ) {
        // SAFETY: as for `tile_avx512_vnni`, without VNNI.
        unsafe { tile_avx512::<false, R>(tile, acts, sums) }
    }

    /// The body of both 512-bit kernels, inlined into each.
    ///
    /// # Safety
    /// As [`tile_avx512_vnni`] (VNNI only when `VNNI`).
    #[inline(always)]
    unsafe fn tile_avx512<const VNNI: bool, const R: usize>(
        tile: &[TileBlock],
        acts: &[&[ActBlock]],
        sums: &mut [[f32; TILE]],
    ) {
        debug_assert!(R <= ROWS && acts.len() == R);
        // SAFETY: the intrinsics need the features the two callers enable (this body is
        // inlined into each); every load reads inside its array (chunk c is bytes
        // 64c..64c + 64 of the 256 nibble bytes; `d` and `m` hold 16 f16, 32 bytes), and each
        // store writes the 16 floats of `sums[r]`.
        unsafe {
            let mask = _mm512_set1_epi8(0x0F);
            let mut sumf = [_mm512_setzero_ps(); R];
            for (b, w) in tile.iter().enumerate() {
                // The 8 vectors of 4 values of 16 rows: low nibbles of chunk c pair with
                // activations 4c.., high nibbles with 16 + 4c...
                let mut q = [_mm512_setzero_si512(); 8];
                for c in 0..4 {
                    let z = _mm512_loadu_si512(w.qs.as_ptr().add(64 * c).cast());
                    q[2 * c] = _mm512_and_si512(z, mask);
                    q[2 * c + 1] = _mm512_and_si512(_mm512_srli_epi16::<4>(z), mask);
                }
                let d = _mm512_cvtph_ps(_mm256_loadu_si256(w.d.as_ptr().cast()));
                let m = _mm512_cvtph_ps(_mm256_loadu_si256(w.m.as_ptr().cast()));
                for r in 0..R {
                    let y = &acts[r][b];
                    // Two independent chains, summed (integers: exact in any order).
                    let mut lo = _mm512_setzero_si512();
                    let mut hi = _mm512_setzero_si512();
                    for c in 0..4 {
                        let a = _mm512_set1_epi32(quad(y, 4 * c));
                        lo = dot4_512::<VNNI>(lo, q[2 * c], a);
                        let a = _mm512_set1_epi32(quad(y, 16 + 4 * c));
                        hi = dot4_512::<VNNI>(hi, q[2 * c + 1], a);
                    }
                    let sumi = _mm512_add_epi32(lo, hi);
                    // sumf += ((sumi · dx) · dy) + (mx · sy), as candle's scalar loop rounds it.
                    let t = _mm512_mul_ps(
                        _mm512_mul_ps(_mm512_cvtepi32_ps(sumi), d),
                        _mm512_set1_ps(y.d),
                    );
                    let t = _mm512_add_ps(t, _mm512_mul_ps(m, _mm512_set1_ps(y.s)));
                    sumf[r] = _mm512_add_ps(sumf[r], t);
                }
            }
            for r in 0..R {
                _mm512_storeu_ps(sums[r].as_mut_ptr(), sumf[r]);
            }
        }
    }

    /// [`super::tile_dot`] on 256-bit vectors, the tile as two halves of 8 rows.
    ///
    /// # Safety
    /// AVX2 and F16C; `acts.len() == R <= 4`, each holding the tile's blocks;
    /// `sums.len() >= R`.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn tile_avx2<const R: usize>(
        tile: &[TileBlock],
        acts: &[&[ActBlock]],
        sums: &mut [[f32; TILE]],
    ) {
        debug_assert!(R <= ROWS && acts.len() == R);
        let mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        for half in 0..2 {
            let mut sumf = [_mm256_setzero_ps(); R];
            for (b, w) in tile.iter().enumerate() {
                let mut q = [_mm256_setzero_si256(); 8];
                for c in 0..4 {
                    // SAFETY: bytes 64c + 32·half .. + 32 of the 256-byte array.
                    let z =
                        unsafe { _mm256_loadu_si256(w.qs.as_ptr().add(64 * c + 32 * half).cast()) };
                    q[2 * c] = _mm256_and_si256(z, mask);
                    q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(z), mask);
                }
                // SAFETY: each reads 8 f16 (16 bytes) of its 16-element array.
                let (d, m) = unsafe {
                    (
                        _mm256_cvtph_ps(_mm_loadu_si128(w.d.as_ptr().add(8 * half).cast())),
                        _mm256_cvtph_ps(_mm_loadu_si128(w.m.as_ptr().add(8 * half).cast())),
                    )
                };
                for r in 0..R {
                    let y = &acts[r][b];
                    let mut lo = _mm256_setzero_si256();
                    let mut hi = _mm256_setzero_si256();
                    for c in 0..4 {
                        let a = _mm256_set1_epi32(quad(y, 4 * c));
                        let pairs = _mm256_maddubs_epi16(q[2 * c], a);
                        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(pairs, ones));
                        let a = _mm256_set1_epi32(quad(y, 16 + 4 * c));
                        let pairs = _mm256_maddubs_epi16(q[2 * c + 1], a);
                        hi = _mm256_add_epi32(hi, _mm256_madd_epi16(pairs, ones));
                    }
                    let sumi = _mm256_add_epi32(lo, hi);
                    let t = _mm256_mul_ps(
                        _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), d),
                        _mm256_set1_ps(y.d),
                    );
                    let t = _mm256_add_ps(t, _mm256_mul_ps(m, _mm256_set1_ps(y.s)));
                    sumf[r] = _mm256_add_ps(sumf[r], t);
                }
            }
            for r in 0..R {
                // SAFETY: floats 8·half .. 8·half + 8 of sums[r]'s 16.
                unsafe { _mm256_storeu_ps(sums[r].as_mut_ptr().add(8 * half), sumf[r]) };
            }
        }
    }
}

impl CustomOp1 for Q4_1Matrix {
    fn name(&self) -> &'static str {
        "q4_1-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        quantized_fwd("q4_1 matmul", (self.n, self.k), storage, layout, |x, m| {
            Ok(if m < DEQUANT_MIN_ROWS {
                self.matmul(x, m, Kernel::detected())
            } else if super::gemm512::available() {
                let w = self.dequantize();
                super::gemm512::matmul_nt(x, &w, m, self.n, self.k)
                    .unwrap_or_else(|| self.matmul(x, m, Kernel::detected()))
            } else {
                // Without AVX-512: candle's f32 matmul (the `gemm` crate) on the same weights.
                let w = candle_core::Tensor::from_vec(
                    self.dequantize(),
                    (self.n, self.k),
                    &Device::Cpu,
                )?;
                let x = candle_core::Tensor::from_slice(x, (m, self.k), &Device::Cpu)?;
                x.matmul(&w.t()?)?.flatten_all()?.to_vec1::<f32>()?
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    fn random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_kernel_here_the_scalar_loop_and_candle_agree_bit_for_bit() -> Result<()> {
        let dev = Device::Cpu;
        // Whole tiles and a tail of 12 rows; 2 to 18 blocks (candle wants an even count); 1 to
        // 4 rows and a row group that is not full.
        for (n, k, seed) in [(76, 128, 7), (32, 64, 3), (16, 576, 9)] {
            let w = Tensor::from_vec(random(n * k, seed), (n, k), &dev)?;
            let q = QTensor::quantize(&w, GgmlDType::Q4_1)?;
            let ours = Q4_1Matrix::from_ggml_bytes(&q.data()?, n, k)?;
            let candle = QMatMul::from_qtensor(q)?;
            for m in [1, 2, 3, 4, 7] {
                let x = random(m * k, 11 + m as u32);
                let expected = candle
                    .forward(&Tensor::from_vec(x.clone(), (m, k), &dev)?)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                for kernel in Kernel::ALL.into_iter().filter(|k| k.runs_here()) {
                    assert_eq!(
                        ours.matmul(&x, m, kernel),
                        expected,
                        "{kernel:?} against candle, [{m}, {k}] x [{n}, {k}]^T"
                    );
                }
                let via_op = Tensor::from_vec(x, (1, m, k), &dev)?.apply_op1_no_bwd(&ours)?;
                assert_eq!(via_op.dims(), &[1, m, n]);
                assert_eq!(via_op.flatten_all()?.to_vec1::<f32>()?, expected);
            }
        }
        Ok(())
    }

    #[test]
    fn the_dispatcher_takes_the_widest_kernel_the_cpu_has_and_honours_the_switch() {
        let cpu = |features: &'static [&'static str]| move |f: &str| features.contains(&f);
        let zen4 = cpu(&["avx2", "f16c", "avx512f", "avx512bw", "avx512vnni"]);
        let skylake_x = cpu(&["avx2", "f16c", "avx512f", "avx512bw"]);
        let haswell = cpu(&["avx2", "f16c"]);
        let knights = cpu(&["avx2", "f16c", "avx512f"]);
        assert_eq!(Kernel::choose(false, zen4), Kernel::Avx512Vnni);
        assert_eq!(Kernel::choose(true, zen4), Kernel::Avx2);
        assert_eq!(Kernel::choose(false, skylake_x), Kernel::Avx512);
        assert_eq!(Kernel::choose(false, haswell), Kernel::Avx2);
        assert_eq!(Kernel::choose(false, knights), Kernel::Avx2);
        assert_eq!(Kernel::choose(false, cpu(&["sse4.2"])), Kernel::Scalar);
        assert_eq!(Kernel::choose(false, cpu(&["avx2"])), Kernel::Scalar);
        // The detected kernel runs here, and so does every narrower one.
        let here = Kernel::detected();
        assert!(here.runs_here());
        assert!(Kernel::ALL
            .iter()
            .filter(|k| **k as u8 <= here as u8)
            .all(|k| k.runs_here()));
    }

    #[test]
    fn many_rows_multiply_the_dequantized_weights() -> Result<()> {
        let (n, k) = (40, 96);
        let dev = Device::Cpu;
        let w = Tensor::from_vec(random(n * k, 3), (n, k), &dev)?;
        let q = QTensor::quantize(&w, GgmlDType::Q4_1)?;
        let ours = Q4_1Matrix::from_ggml_bytes(&q.data()?, n, k)?;
        // candle's own dequantization is the reference for the weights.
        let deq = q.dequantize(&dev)?;
        assert_eq!(ours.dequantize(), deq.flatten_all()?.to_vec1::<f32>()?);
        let m = DEQUANT_MIN_ROWS + 3;
        let x = Tensor::from_vec(random(m * k, 5), (m, k), &dev)?;
        let exact = x.matmul(&deq.t()?)?;
        let got = x.apply_op1_no_bwd(&ours)?;
        let diff = (got - &exact)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "{diff}");
        Ok(())
    }

    #[test]
    fn a_wrong_size_is_refused() {
        assert!(Q4_1Matrix::from_ggml_bytes(&[0u8; 40], 2, 33).is_err());
        assert!(Q4_1Matrix::from_ggml_bytes(&[0u8; 39], 2, 32).is_err());
    }
}
