//! Q8_0 matrix multiplication on the CPU with AVX-512 VNNI, bit-identical to candle's AVX2
//! kernel: SmolLM2's tied output head (`token_embd`, `[49152, 576]`) is stored Q8_0 in its
//! Q4_1 GGUF and is a third of the weight bytes a decode step reads.
//!
//! candle 0.11.1 multiplies a Q8_0 row by Q8_0 activations with AVX2
//! (`quantized::avx::vec_dot_q8_0_q8_0`): per block, `vpmaddubsw` + `vpmaddwd` give 8 lanes,
//! lane `l` the exact sum of products `4l..4l + 4`; each lane is converted to f32 and
//! accumulated as `acc_l = fma(d_x·d_y, lane_l, acc_l)`; at the end the 8 lanes are summed as
//! `((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))` (`hsum_float_8`). This kernel does the
//! same arithmetic for 16 weight rows at once, one row a 32-bit lane:
//!
//! - **Layout.** Weights are repacked on load into tiles of 16 rows (as [`super::q4_1`]): for
//!   each tile and block of 32 inputs, 8 chunks of 64 bytes, chunk `c` holding bytes
//!   `4c..4c + 4` of each row, stored as `q + 128` (unsigned), then the 16 rows' `d` (f16).
//! - **Integer part.** `vpdpbusd` multiplies the unsigned bytes by a 4-byte broadcast of the
//!   activations, so `Σ (q + 128)·a = Σ q·a + 128·Σ a`; subtracting `128·Σ a` (computed once per
//!   activation chunk) leaves candle's lane `c` for each row, exactly.
//! - **Float part.** One f32 accumulator vector per chunk `c` (8 in all), `fma(d_x·d_y, lane,
//!   acc)` as candle's, then candle's order of the final sum.
//!
//! Only CPUs with AVX-512 VNNI (and BW, F16C) take this path ([`Kernel::detected`] is
//! [`Kernel::Avx512Vnni`], so `BIOINSTRUCT_NO_AVX512=1` turns it off); elsewhere candle's own
//! kernel runs. The tests compare it with candle's `QMatMul` bit for bit.
//!
//! One of the modules where `unsafe` is allowed: the SIMD intrinsics and the disjoint writes
//! of the thread pool's work items.
#![allow(unsafe_code)]

use super::q4_1::{quantized_fwd, tiled_matmul, Kernel, ROWS, TILE};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};
use half::f16;

/// Values per block (ggml's `QK8_0`).
const BLOCK: usize = 32;

/// One block of 32 inputs of a tile of 16 weight rows.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct TileBlock {
    /// 8 chunks of 64 bytes: in chunk `c`, row `i`'s values `4c..4c + 4`, each plus 128.
    qs: [u8; 512],
    /// Each row's scale.
    d: [f16; TILE],
}

/// An activation block quantized to Q8_0 as candle does, with its values' sum per chunk of 4.
#[derive(Debug, Clone, Copy)]
struct ActBlock {
    d: f32,
    qs: [i8; BLOCK],
    /// `128 · Σ qs[4c..4c + 4]` for each chunk `c`: what the `+ 128` of the weights adds.
    bias: [i32; 8],
}

/// A Q8_0 weight matrix `[n, k]` (out_features × in_features) for CPUs with AVX-512 VNNI, as
/// a candle custom op that multiplies activations `[.., k]` into `[.., n]`.
#[derive(Debug, Clone)]
pub struct Q8_0Matrix {
    /// `n.div_ceil(16)` tiles of `k / 32` blocks, tile-major; rows past `n` are zero.
    tiles: Vec<TileBlock>,
    n: usize,
    k: usize,
}

impl Q8_0Matrix {
    /// Parses ggml's Q8_0 bytes (34 bytes a block: f16 `d`, then 32 signed bytes) for a
    /// matrix of `n` rows of `k` values, or `None` when this CPU's kernel
    /// ([`Kernel::detected`]) is not AVX-512 VNNI (keep candle's then).
    ///
    /// # Errors
    /// When `k` is not a multiple of 32 or the byte count does not match.
    pub fn from_ggml_bytes(bytes: &[u8], n: usize, k: usize) -> Result<Option<Q8_0Matrix>> {
        if Kernel::detected() != Kernel::Avx512Vnni {
            return Ok(None);
        }
        Self::parse(bytes, n, k).map(Some)
    }

    fn parse(bytes: &[u8], n: usize, k: usize) -> Result<Q8_0Matrix> {
        if !k.is_multiple_of(BLOCK) || bytes.len() != n * (k / BLOCK) * 34 {
            candle_core::bail!(
                "Q8_0 data of {} bytes does not hold a [{n}, {k}] matrix",
                bytes.len()
            );
        }
        let kb = k / BLOCK;
        let zero = TileBlock {
            qs: [128; 512],
            d: [f16::ZERO; TILE],
        };
        let mut tiles = vec![zero; n.div_ceil(TILE) * kb];
        for (row, blocks) in bytes.chunks_exact(kb * 34).enumerate() {
            let (t, i) = (row / TILE, row % TILE);
            for (b, src) in blocks.chunks_exact(34).enumerate() {
                let tile = &mut tiles[t * kb + b];
                tile.d[i] = f16::from_le_bytes([src[0], src[1]]);
                for (j, q) in src[2..].iter().enumerate() {
                    tile.qs[(j / 4) * 64 + i * 4 + j % 4] = q.wrapping_add(128);
                }
            }
        }
        Ok(Q8_0Matrix { tiles, n, k })
    }

    /// Output width (rows of the weight).
    pub fn out_features(&self) -> usize {
        self.n
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.k
    }

    /// Multiplies `m` rows of `k` activations into `[m, n]` ([`super::q4_1::tiled_matmul`]).
    fn matmul(&self, lhs: &[f32], m: usize) -> Vec<f32> {
        let kb = self.k / BLOCK;
        let act: Vec<ActBlock> = lhs
            .chunks_exact(self.k)
            .take(m)
            .flat_map(quantize_row_q8_0)
            .collect();
        tiled_matmul(&act, kb, self.n, |t, acts, sums| {
            let tile = &self.tiles[t * kb..(t + 1) * kb];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: matrices are built only where the kernel is AVX-512 VNNI
            // (`from_ggml_bytes`; the tests check `runs_here` first); `acts` has 1 to 4 rows
            // of the tile's blocks, `sums` one entry per row.
            unsafe {
                match acts.len() {
                    1 => x86::tile_vnni::<1>(tile, acts, sums),
                    2 => x86::tile_vnni::<2>(tile, acts, sums),
                    3 => x86::tile_vnni::<3>(tile, acts, sums),
                    _ => x86::tile_vnni::<4>(tile, acts, sums),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (tile, acts, sums);
        })
    }
}

/// candle 0.11.1's `BlockQ8_0::from_float` for one row, with each block's chunk sums.
fn quantize_row_q8_0(xs: &[f32]) -> Vec<ActBlock> {
    xs.chunks_exact(BLOCK)
        .map(|x| {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut qs = [0i8; BLOCK];
            for (q, v) in qs.iter_mut().zip(x) {
                *q = (v * id).round() as i8;
            }
            let mut bias = [0i32; 8];
            for (c, b) in bias.iter_mut().enumerate() {
                *b = 128
                    * qs[4 * c..4 * c + 4]
                        .iter()
                        .map(|&q| i32::from(q))
                        .sum::<i32>();
            }
            ActBlock {
                d: f16::from_f32(d).to_f32(),
                qs,
                bias,
            }
        })
        .collect()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{ActBlock, TileBlock, ROWS, TILE};
    use std::arch::x86_64::*;

    /// The 16 dot products of a tile's rows with each of `acts`, into `sums[r]`, in candle's
    /// arithmetic (see the module's notes).
    ///
    /// # Safety
    /// AVX-512 F, BW, VNNI and F16C; `acts.len() == R <= 4`, each holding the tile's blocks;
    /// `sums.len() >= R`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    pub(super) unsafe fn tile_vnni<const R: usize>(
        tile: &[TileBlock],
        acts: &[&[ActBlock]],
        sums: &mut [[f32; TILE]],
    ) {
        debug_assert!(R <= ROWS && acts.len() == R);
        // One accumulator per chunk (candle's lane) per activation row.
        let mut acc = [[_mm512_setzero_ps(); 8]; R];
        for (b, w) in tile.iter().enumerate() {
            // SAFETY: chunk c is bytes 64c..64c + 64 of the 512; `d` holds 16 f16.
            let (q, dx) = unsafe {
                let q: [__m512i; 8] =
                    std::array::from_fn(|c| _mm512_loadu_si512(w.qs.as_ptr().add(64 * c).cast()));
                (q, _mm512_cvtph_ps(_mm256_loadu_si256(w.d.as_ptr().cast())))
            };
            for r in 0..R {
                let y = &acts[r][b];
                // candle's d = d_x · d_y, rounded once.
                let d = _mm512_mul_ps(dx, _mm512_set1_ps(y.d));
                for c in 0..8 {
                    let a = i32::from_le_bytes([
                        y.qs[4 * c] as u8,
                        y.qs[4 * c + 1] as u8,
                        y.qs[4 * c + 2] as u8,
                        y.qs[4 * c + 3] as u8,
                    ]);
                    let sumi =
                        _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[c], _mm512_set1_epi32(a));
                    let sumi = _mm512_sub_epi32(sumi, _mm512_set1_epi32(y.bias[c]));
                    acc[r][c] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc[r][c]);
                }
            }
        }
        for r in 0..R {
            let a = &acc[r];
            // hsum_float_8's order: ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)).
            let even = _mm512_add_ps(_mm512_add_ps(a[4], a[0]), _mm512_add_ps(a[6], a[2]));
            let odd = _mm512_add_ps(_mm512_add_ps(a[5], a[1]), _mm512_add_ps(a[7], a[3]));
            // SAFETY: sums[r] holds 16 floats.
            unsafe { _mm512_storeu_ps(sums[r].as_mut_ptr(), _mm512_add_ps(even, odd)) };
        }
    }
}

impl CustomOp1 for Q8_0Matrix {
    fn name(&self) -> &'static str {
        "q8_0-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        quantized_fwd("q8_0 matmul", (self.n, self.k), storage, layout, |x, m| {
            Ok(self.matmul(x, m))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    #[test]
    fn the_vnni_kernel_and_candle_agree_bit_for_bit() -> Result<()> {
        let dev = Device::Cpu;
        let built = Q8_0Matrix::from_ggml_bytes(&[0u8; 34], 1, 32)?;
        assert_eq!(built.is_some(), Kernel::detected() == Kernel::Avx512Vnni);
        if !Kernel::Avx512Vnni.runs_here() {
            return Ok(());
        }
        // Whole tiles and a tail of 12 rows; 1 to 18 blocks; 1 to 4 rows and a row group
        // that is not full.
        for (n, k, seed) in [(76, 128, 7), (32, 32, 3), (16, 576, 9)] {
            let w = crate::rng::XorShift64Star::new(seed).uniform(n * k, 1.0);
            let q = QTensor::quantize(&Tensor::from_vec(w, (n, k), &dev)?, GgmlDType::Q8_0)?;
            let ours = Q8_0Matrix::parse(&q.data()?, n, k)?;
            let candle = QMatMul::from_qtensor(q)?;
            for m in [1, 2, 3, 4, 7] {
                let x = crate::rng::XorShift64Star::new(seed + m as u64).uniform(m * k, 2.0);
                let expected = candle
                    .forward(&Tensor::from_vec(x.clone(), (m, k), &dev)?)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                assert_eq!(ours.matmul(&x, m), expected, "[{m}, {k}] x [{n}, {k}]^T");
                let via_op = Tensor::from_vec(x, (1, m, k), &dev)?.apply_op1_no_bwd(&ours)?;
                assert_eq!(via_op.dims(), &[1, m, n]);
            }
        }
        Ok(())
    }

    #[test]
    fn a_wrong_size_is_refused() {
        assert!(Q8_0Matrix::parse(&[0u8; 68], 2, 33).is_err());
        assert!(Q8_0Matrix::parse(&[0u8; 67], 2, 32).is_err());
    }
}
