//! The f32 `x W^T` kernels on SmolLM2-135M's projection shapes: candle's matmul (the `gemm`
//! crate) against `bioinstruct::model::gemm512` (AVX-512), same inputs, same thread count.
//! Prints GFLOP/s per shape and the ratio.
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
    let shapes = [
        ("q_proj/o_proj", 576, 576),
        ("k_proj/v_proj", 192, 576),
        ("gate/up_proj", 1536, 576),
        ("down_proj", 576, 1536),
    ];
    // One untimed round first: the thread pool's start and the first page faults of each
    // shape's buffers would otherwise land on whichever shape comes first.
    for (round, (name, n, k)) in shapes.iter().chain(&shapes).copied().enumerate() {
        let mut rng = bioinstruct::rng::XorShift64Star::new(7);
        let x = rng.uniform(m * k, 1.0);
        let w = rng.uniform(n * k, 1.0);
        let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu)?;
        let wt = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu)?;
        let flops = 2.0 * (m * n * k) as f64;
        let reps = 40;
        let time = |f: &mut dyn FnMut()| {
            f();
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        };
        let candle = time(&mut || {
            let _ = xt.matmul(&wt.t().expect("t")).expect("matmul");
        });
        let ours = time(&mut || {
            let _ = gemm512::matmul_nt(&x, &w, m, n, k);
        });
        if round < shapes.len() {
            continue;
        }
        println!(
            "{name:14} [{m}, {k}] x [{n}, {k}]^T: candle {:6.1} GFLOP/s, gemm512 {:6.1} GFLOP/s, {:.2}x",
            flops / candle / 1e9,
            flops / ours / 1e9,
            candle / ours
        );
    }
    Ok(())
}
