//! Batched decode against one sequence at a time on a GGUF model (`Llama::forward_decode`,
//! which `bioinstruct serve` uses): for each batch size B, B sequences with the same
//! prompt ids (their caches filled once each) decode STEPS greedy tokens together, then the
//! same B sequences decode STEPS tokens one after another with `forward_step`. Prints one
//! JSON line per B: aggregate generated tokens/s of both ways and their ratio.
//!
//! Usage: `bench_batch_decode GGUF IDS_JSON STEPS B...` (e.g. `... 64 1 4 8`); the ids as
//! `scripts/bench-generate.sh` writes them (`bench_prompt_ids`).
#![allow(clippy::unwrap_used)]

use bioinstruct::model::{load_gguf, Cache, LoadOptions};
use candle_core::{Device, Tensor, D};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    bioinstruct::model::pin_thread_count();
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 5,
        "usage: bench_batch_decode GGUF IDS_JSON STEPS B..."
    );
    let ids: Vec<u32> = serde_json::from_str(&std::fs::read_to_string(&args[2])?)?;
    let steps: usize = args[3].parse()?;
    let loaded = load_gguf(std::path::Path::new(&args[1]), &LoadOptions::default())?;
    let model = &loaded.model;
    let prompt = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let mut first_cache = model.new_cache(ids.len() + steps + 1);
    let logits = model.forward_step(&prompt, &mut first_cache)?;
    let first = logits.argmax(D::Minus1)?.to_vec1::<u32>()?[0];
    for b in args[4..].iter().map(|s| s.parse::<usize>()) {
        let b = b?;
        // Batched: every sequence continues its own copy of the prompt's cache.
        let fresh = || -> anyhow::Result<Cache> {
            let mut c = model.new_cache(ids.len() + steps + 1);
            model.forward_step(&prompt, &mut c)?;
            Ok(c)
        };
        let mut caches: Vec<Cache> = (0..b).map(|_| fresh()).collect::<anyhow::Result<_>>()?;
        let mut next = vec![first; b];
        let start = Instant::now();
        for _ in 0..steps {
            let mut refs: Vec<&mut Cache> = caches.iter_mut().collect();
            let logits = model.forward_decode(&next, &mut refs)?;
            next = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        }
        let batched_s = start.elapsed().as_secs_f64();
        // One at a time: the same sequences, each decoded alone.
        let mut caches: Vec<Cache> = (0..b).map(|_| fresh()).collect::<anyhow::Result<_>>()?;
        let start = Instant::now();
        for cache in &mut caches {
            let mut token = first;
            for _ in 0..steps {
                let input = Tensor::new(&[token], &Device::Cpu)?.unsqueeze(0)?;
                let logits = model.forward_step(&input, cache)?;
                token = logits.argmax(D::Minus1)?.to_vec1::<u32>()?[0];
            }
        }
        let single_s = start.elapsed().as_secs_f64();
        let tokens = (b * steps) as f64;
        println!(
            "{}",
            serde_json::json!({
                "batch": b,
                "steps": steps,
                "batched_tokens_per_s": (tokens / batched_s * 10.0).round() / 10.0,
                "one_at_a_time_tokens_per_s": (tokens / single_s * 10.0).round() / 10.0,
                "ratio": ((single_s / batched_s) * 100.0).round() / 100.0,
            })
        );
    }
    Ok(())
}
