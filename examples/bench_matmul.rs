//! The f32 kernels on SmolLM2-135M's projection shapes: candle's matmul (the `gemm` crate)
//! against `bioinstruct::model::gemm512` (AVX-512), same inputs, same thread count. Forward
//! products `x W^T` (`matmul_nt`) and the training backward's input gradients `g W`
//! (`matmul_nn`), the output head's included. Prints GFLOP/s per shape and the ratio.
//!
//! Usage: cargo run --release --example bench_matmul [ROWS]   (default 320, a PubMedQA prompt)

use bioinstruct::model::gemm512;
use candle_core::{Device, Tensor};
use std::time::Instant;

fn main() -> candle_core::Result<()> {
    bioinstruct::model::pin_thread_count();
    let m: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(320);
    if !gemm512::available() {
        println!("this CPU has no AVX-512 F: only candle's matmul runs here");
    }
    // (name, n, k, whether the weight is multiplied untransposed: `[k, n]`).
    let shapes = [
        ("q_proj/o_proj", 576, 576, false),
        ("k_proj/v_proj", 192, 576, false),
        ("gate/up_proj", 1536, 576, false),
        ("down_proj", 576, 1536, false),
        ("lm_head", 49152, 576, false),
        ("dx q/o_proj", 576, 576, true),
        ("dx gate/up", 576, 1536, true),
        ("dx down_proj", 1536, 576, true),
        ("dx lm_head", 576, 49152, true),
    ];
    // One untimed round first: the thread pool's start and the first page faults of each
    // shape's buffers would otherwise land on whichever shape comes first.
    for (round, (name, n, k, nn)) in shapes.iter().chain(&shapes).copied().enumerate() {
        let mut rng = bioinstruct::rng::XorShift64Star::new(7);
        let x = rng.uniform(m * k, 1.0);
        let w = rng.uniform(n * k, 1.0);
        let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu)?;
        let wt = if nn {
            Tensor::from_vec(w.clone(), (k, n), &Device::Cpu)?
        } else {
            Tensor::from_vec(w.clone(), (n, k), &Device::Cpu)?.t()?
        };
        let flops = 2.0 * (m * n * k) as f64;
        let reps = if n * k > 10_000_000 { 4 } else { 40 };
        let time = |f: &mut dyn FnMut()| {
            f();
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        };
        let candle = time(&mut || {
            let _ = xt.matmul(&wt).expect("matmul");
        });
        let ours = time(&mut || {
            let _ = if nn {
                gemm512::matmul_nn(&x, &w, m, n, k)
            } else {
                gemm512::matmul_nt(&x, &w, m, n, k)
            };
        });
        if round < shapes.len() {
            continue;
        }
        println!(
            "{name:14} [{m}, {k}] x {}: candle {:6.1} GFLOP/s, gemm512 {:6.1} GFLOP/s, {:.2}x",
            if nn {
                format!("[{k}, {n}]  ")
            } else {
                format!("[{n}, {k}]^T")
            },
            flops / candle / 1e9,
            flops / ours / 1e9,
            candle / ours
        );
    }
    Ok(())
}
