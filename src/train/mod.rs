//! LoRA instruction tuning (BioInstruct, Tran et al. 2024, §2.3: LoRA on a Llama-family base
//! model over curated instructions): examples from instruction records ([`data`]), the
//! optimizer and loss ([`optim`]), the loop ([`trainer`]) and the run folder ([`run`]).

pub mod config;
pub mod data;
pub mod engine;
pub mod foreign;
pub mod optim;
pub mod run;
pub mod trainer;

/// Spins of a candle barrier-pool thread before it parks, while training.
const TRAINING_SPIN_LIMIT: &str = "2000";

/// Sets candle's CPU barrier pool to park its threads sooner (`CANDLE_BARRIER_POOL_SPIN_LIMIT`
/// = 2000 spins instead of 25,000), unless the variable is set. Training interleaves
/// candle's parallel element-wise ops (barrier pool) with gemm's matmuls (rayon pool); with
/// the default, a barrier-pool thread spinning between element-wise ops takes a core from
/// gemm's threads: on 2 cores `perf` showed it at 19% of all samples, and a LoRA step of
/// SmolLM2-135M (seq 256) took 1.32 s instead of 1.14 s (`examples/bench_train.rs`; 1,000
/// to 5,000 spins were equally good, 0 and 25,000 worse). Evaluation's scoring mixes the same
/// two pools (PubMedQA loglikelihood, 20 items: 2.58 → 2.71 items/s), so `eval run` sets it
/// too. Generation keeps candle's default.
/// Call it at the start of `main`, before other threads exist and before the pool starts.
pub fn tune_cpu_for_training() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", TRAINING_SPIN_LIMIT);
    }
}
