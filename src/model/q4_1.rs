//! Q4_1 matrix multiplication on the CPU with AVX2, bit-identical to candle's.
//!
//! candle 0.11.1 multiplies Q4_1 blocks with a scalar loop (`BlockQ4_1::vec_dot_unopt`),
//! several times slower than llama.cpp's `ggml_vec_dot_q4_1_q8_1`. This module follows
//! ggml's method (activations quantized to Q8_1 blocks of 32; weights as 4-bit values with
//! a scale `d` and a minimum `m` per block) but keeps candle's arithmetic exactly:
//! - the integer dot product of each block pair, computed 8 output columns at a time with
//!   AVX2 `maddubs`/`madd`, is exact in any order;
//! - the float accumulation `sum += sumi·dₓ·d_y + mₓ·s_y` runs per output in block order,
//!   lane by lane, without fused multiply-add, exactly as candle's scalar loop does.
//!
//! So logits match candle-transformers' `quantized_llama` bit for bit (tests/real_model.rs,
//! a token at a time). The scalar path runs where AVX2 is missing, and the test compares
//! the two.
//!
//! A prompt's many rows at once ([`DEQUANT_MIN_ROWS`] or more) take another road: the
//! weights are dequantized to f32 (`d·q + m`, as ggml's `dequantize_row_q4_1`) and
//! multiplied by the unquantized activations with [`super::gemm512`] (candle's f32 matmul
//! where the CPU has no AVX-512). The integer kernel reads every weight block once per row;
//! a float GEMM reuses each tile across many rows: 961 prompt tokens of SmolLM2-135M took
//! 5.8 s the integer way and about 1 s through `gemm512` (AMD EPYC, 2 cores). Activations
//! are not rounded to 8 bits on this road, so it is nearer the float function than the
//! integer one.
//!
//! This is one of the two modules where `unsafe` is allowed: the AVX2 intrinsics.
#![allow(unsafe_code)]

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape};
use half::f16;

/// Values per block (ggml's `QK4_1` and `QK8_1`).
pub const BLOCK: usize = 32;

/// From this many activation rows (a prompt, not a decode step) on, the product runs on
/// dequantized weights through a float GEMM ([`super::gemm512`]'s own minimum).
pub const DEQUANT_MIN_ROWS: usize = 16;

/// A weight block: 32 values `d·q + m` with `q` in 0..=15; `qs[j]` holds value `j` in its
/// low nibble and value `j + 16` in its high nibble (ggml's layout).
#[derive(Debug, Clone, Copy)]
struct WeightBlock {
    d: f32,
    m: f32,
    qs: [u8; 16],
}

/// An activation block quantized to Q8_1: 32 values `d·q`, and `s = d·Σq` (rounded through
/// f16 as ggml stores it).
#[derive(Debug, Clone, Copy)]
struct ActBlock {
    d: f32,
    s: f32,
    qs: [i8; 32],
}

/// A Q4_1 weight matrix `[n, k]` (out_features × in_features), as a candle custom op that
/// multiplies activations `[.., k]` into `[.., n]`.
#[derive(Debug, Clone)]
pub struct Q4_1Matrix {
    blocks: Vec<WeightBlock>,
    n: usize,
    k: usize,
}

impl Q4_1Matrix {
    /// Parses ggml's Q4_1 bytes (20 bytes a block: f16 `d`, f16 `m`, 16 bytes of nibbles)
    /// for a matrix of `n` rows of `k` values.
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
        let blocks = bytes
            .chunks_exact(20)
            .map(|b| {
                let mut qs = [0u8; 16];
                qs.copy_from_slice(&b[4..20]);
                WeightBlock {
                    d: f16::from_le_bytes([b[0], b[1]]).to_f32(),
                    m: f16::from_le_bytes([b[2], b[3]]).to_f32(),
                    qs,
                }
            })
            .collect();
        Ok(Q4_1Matrix { blocks, n, k })
    }

    /// Output width (rows of the weight).
    pub fn out_features(&self) -> usize {
        self.n
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.k
    }

    /// The weights as f32 `[n, k]`, row-major (ggml's `dequantize_row_q4_1`: value `j` of a
    /// block is `d·(qs[j] & 15) + m`, value `j + 16` is `d·(qs[j] >> 4) + m`), one output
    /// row per work item on candle's thread pool.
    fn dequantize(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.n * self.k];
        let addr = w.as_mut_ptr() as usize;
        let k = self.k;
        candle_core::utils::barrier_pool().execute_chunked(self.n, |rows| {
            for col in rows {
                // SAFETY: item `col` owns `w[col·k .. (col + 1)·k]`, in bounds since
                // col < n; each item goes to exactly one call, and `w` outlives the call.
                let out =
                    unsafe { std::slice::from_raw_parts_mut((addr as *mut f32).add(col * k), k) };
                for (b, chunk) in self.row(col).iter().zip(out.chunks_exact_mut(BLOCK)) {
                    let (lo, hi) = chunk.split_at_mut(BLOCK / 2);
                    for ((q, l), h) in b.qs.iter().zip(lo).zip(hi) {
                        *l = f32::from(q & 15) * b.d + b.m;
                        *h = f32::from(q >> 4) * b.d + b.m;
                    }
                }
            }
        });
        w
    }

    fn row(&self, col: usize) -> &[WeightBlock] {
        let kb = self.k / BLOCK;
        &self.blocks[col * kb..(col + 1) * kb]
    }

    /// Multiplies `m` rows of `k` activations into `[m, n]`; `use_avx2` chooses the kernel
    /// (the tests run both). Every (row, group of 8 columns) pair is one work item on
    /// candle's own thread pool: one dispatch per matmul, and no second pool of spinning
    /// threads competing with candle's.
    fn matmul(&self, lhs: &[f32], m: usize, use_avx2: bool) -> Vec<f32> {
        const GROUP: usize = 8;
        let kb = self.k / BLOCK;
        let act: Vec<ActBlock> = lhs
            .chunks_exact(self.k)
            .take(m)
            .flat_map(quantize_row_q8_1)
            .collect();
        let mut dst = vec![0f32; m * self.n];
        let groups = self.n / GROUP;
        let dst_addr = dst.as_mut_ptr() as usize;
        let work = |range: std::ops::Range<usize>| {
            for item in range {
                let (row, g) = (item / groups, item % groups);
                let a = &act[row * kb..(row + 1) * kb];
                // SAFETY: item (row, g) owns `dst[row·n + 8g .. row·n + 8g + 8]`, in bounds
                // since 8g + 8 <= n; `execute_chunked` hands each item to exactly one call, so
                // no two threads write the same element, and `dst` outlives the blocking call.
                let out = unsafe {
                    std::slice::from_raw_parts_mut(
                        (dst_addr as *mut f32).add(row * self.n + g * GROUP),
                        GROUP,
                    )
                };
                #[cfg(target_arch = "x86_64")]
                if use_avx2 {
                    // SAFETY: `use_avx2` is true only when the CPU reported AVX2 at run time.
                    unsafe { avx2::dot8(self, g * GROUP, a, out) };
                    continue;
                }
                for (i, o) in out.iter_mut().enumerate() {
                    *o = dot_scalar(self.row(g * GROUP + i), a);
                }
            }
        };
        candle_core::utils::barrier_pool().execute_chunked(m * groups, work);
        for (row, out) in dst.chunks_exact_mut(self.n).enumerate() {
            let a = &act[row * kb..(row + 1) * kb];
            for (col, o) in out.iter_mut().enumerate().skip(groups * GROUP) {
                *o = dot_scalar(self.row(col), a);
            }
        }
        dst
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

/// candle's `BlockQ4_1::vec_dot_unopt`.
fn dot_scalar(w: &[WeightBlock], a: &[ActBlock]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for j in 0..BLOCK / 2 {
            let v0 = (x.qs[j] & 0x0F) as i32;
            let v1 = (x.qs[j] >> 4) as i32;
            sumi += v0 * y.qs[j] as i32 + v1 * y.qs[j + BLOCK / 2] as i32;
        }
        sumf += sumi as f32 * x.d * y.d + x.m * y.s;
    }
    sumf
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{ActBlock, Q4_1Matrix};
    use std::arch::x86_64::*;

    /// The integer dot product of one weight block and one activation block, as 8 partial
    /// sums.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn block_partials(qs: &[u8; 16], act: &[i8; 32]) -> __m256i {
        // SAFETY: both loads read exactly the 16 and 32 bytes of the referenced arrays.
        let (q, y) = unsafe {
            (
                _mm_loadu_si128(qs.as_ptr().cast()),
                _mm256_loadu_si256(act.as_ptr().cast()),
            )
        };
        let mask = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(q, mask); // values 0..16
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask); // values 16..32
        let q4 = _mm256_set_m128i(hi, lo);
        // u8 × i8 pairs summed into i16: at most 2·15·127, no saturation.
        let pairs = _mm256_maddubs_epi16(q4, y);
        _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
    }

    /// Eight floats as one vector, lane `i` = `v[i]`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn lanes(v: [f32; 8]) -> __m256 {
        // SAFETY: reads exactly the 8 floats of `v`.
        unsafe { _mm256_loadu_ps(v.as_ptr()) }
    }

    /// Dot products of activation blocks `act` with the 8 weight rows from `col`, written to
    /// `out[0..8]`, with candle's per-block float accumulation in each lane.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot8(w: &Q4_1Matrix, col: usize, act: &[ActBlock], out: &mut [f32]) {
        let rows: [&[super::WeightBlock]; 8] = std::array::from_fn(|i| w.row(col + i));
        let mut sumf = _mm256_setzero_ps();
        for (b, y) in act.iter().enumerate() {
            let p: [__m256i; 8] = std::array::from_fn(|i| block_partials(&rows[i][b].qs, &y.qs));
            // Horizontal sums of the 8 vectors, one per lane (integer: exact in any order).
            let s01 = _mm256_hadd_epi32(p[0], p[1]);
            let s23 = _mm256_hadd_epi32(p[2], p[3]);
            let s45 = _mm256_hadd_epi32(p[4], p[5]);
            let s67 = _mm256_hadd_epi32(p[6], p[7]);
            let s0123 = _mm256_hadd_epi32(s01, s23);
            let s4567 = _mm256_hadd_epi32(s45, s67);
            let sumi = _mm256_add_epi32(
                _mm256_permute2x128_si256(s0123, s4567, 0x20),
                _mm256_permute2x128_si256(s0123, s4567, 0x31),
            );
            let dx = lanes(std::array::from_fn(|i| rows[i][b].d));
            let mx = lanes(std::array::from_fn(|i| rows[i][b].m));
            // sumf += ((sumi · dx) · dy) + (mx · sy), as candle's scalar loop rounds it.
            let t = _mm256_mul_ps(
                _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), dx),
                _mm256_set1_ps(y.d),
            );
            let t = _mm256_add_ps(t, _mm256_mul_ps(mx, _mm256_set1_ps(y.s)));
            sumf = _mm256_add_ps(sumf, t);
        }
        // SAFETY: `out` holds 8 floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sumf) };
    }
}

fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl CustomOp1 for Q4_1Matrix {
    fn name(&self) -> &'static str {
        "q4_1-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("q4_1 matmul takes f32 activations");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("q4_1 matmul takes contiguous activations");
        };
        let mut dims = layout.shape().dims().to_vec();
        if dims.last() != Some(&self.k) {
            candle_core::bail!("q4_1 matmul: activations {dims:?} do not end in {}", self.k);
        }
        let m = layout.shape().elem_count() / self.k;
        let x = &data[start..end];
        let out = if m < DEQUANT_MIN_ROWS {
            self.matmul(x, m, avx2_available())
        } else if super::gemm512::available() {
            let w = self.dequantize();
            super::gemm512::matmul_nt(x, &w, m, self.n, self.k)
                .unwrap_or_else(|| self.matmul(x, m, avx2_available()))
        } else {
            // Without AVX-512: candle's f32 matmul (the `gemm` crate) on the same weights.
            let w =
                candle_core::Tensor::from_vec(self.dequantize(), (self.n, self.k), &Device::Cpu)?;
            let x = candle_core::Tensor::from_slice(x, (m, self.k), &Device::Cpu)?;
            x.matmul(&w.t()?)?.flatten_all()?.to_vec1::<f32>()?
        };
        if let Some(last) = dims.last_mut() {
            *last = self.n;
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
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
    fn avx2_scalar_and_candle_agree_bit_for_bit() -> Result<()> {
        let (n, k) = (76, 128); // 9 groups of 8 columns and a tail of 4
        let dev = Device::Cpu;
        let w = Tensor::from_vec(random(n * k, 7), (n, k), &dev)?;
        let q = QTensor::quantize(&w, GgmlDType::Q4_1)?;
        let ours = Q4_1Matrix::from_ggml_bytes(&q.data()?, n, k)?;
        let candle = QMatMul::from_qtensor(q)?;
        for m in [1, 3] {
            let x = random(m * k, 11 + m as u32);
            let scalar = ours.matmul(&x, m, false);
            let expected = candle
                .forward(&Tensor::from_vec(x.clone(), (m, k), &dev)?)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            assert_eq!(scalar, expected, "scalar path against candle");
            if avx2_available() {
                assert_eq!(
                    ours.matmul(&x, m, true),
                    expected,
                    "AVX2 path against candle"
                );
            }
            let via_op = Tensor::from_vec(x, (1, m, k), &dev)?.apply_op1_no_bwd(&ours)?;
            assert_eq!(via_op.dims(), &[1, m, n]);
            assert_eq!(via_op.flatten_all()?.to_vec1::<f32>()?, expected);
        }
        Ok(())
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
