//! The local teacher's requests as `examples/bench_teacher.rs` makes them (the same prompts,
//! sampling and seeds), through `generate` alone: the calls this uses exist in every version
//! since the self-instruct prompt did, so `scripts/bench-teacher.sh` builds it in a worktree
//! of an earlier commit to time that version's teacher. Prints one JSON line a round.
//!
//! Usage: `bench_teacher_baseline GGUF REQUESTS ROUNDS`
#![allow(clippy::unwrap_used)]

use bioinstruct::data::Instruction;
use bioinstruct::model::{generate, load_gguf, LoadOptions, Sampling};
use bioinstruct::rng::XorShift64Star;
use bioinstruct::selfinstruct::prompt::{render, sample, DEFAULT_TEMPLATE};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    bioinstruct::model::pin_thread_count();
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() >= 4, "usage: bench_teacher_baseline GGUF REQUESTS ROUNDS");
    let requests: u64 = args[2].parse()?;
    let rounds: usize = args[3].parse()?;
    let loaded = load_gguf(std::path::Path::new(&args[1]), &LoadOptions::default())?;
    let seeds: Vec<Instruction> = bioinstruct::config::BUNDLED_SEEDS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let seed = 42u64;
    let mut prompts = Vec::new();
    for n in 0..requests {
        let mut rng = XorShift64Star::new(seed.wrapping_add(n));
        let shown = sample(&seeds, 3, &mut rng);
        let text = render(DEFAULT_TEMPLATE, &shown, 20, 100, true).map_err(anyhow::Error::msg)?;
        let ids = loaded.encode(&text)?;
        let hash = ids.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &t| {
            (h ^ u64::from(t)).wrapping_mul(0x0100_0000_01b3)
        });
        let sampling = Sampling {
            temperature: 0.7,
            top_p: 0.95,
            max_new_tokens: 200,
            seed: seed.wrapping_add(n) ^ hash,
            stop: vec!["###".into()],
            ..Sampling::default()
        };
        prompts.push((ids, sampling));
    }
    let cancel = AtomicBool::new(false);
    for round in 0..rounds {
        let (mut prompt_s, mut decode_s, mut generated) = (0.0, 0.0, 0);
        let start = Instant::now();
        for (ids, sampling) in &prompts {
            let stats = generate(&loaded, ids, sampling, &cancel, |_| {})?;
            prompt_s += stats.prompt_seconds;
            decode_s += stats.decode_seconds;
            generated += stats.generated_tokens;
        }
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "round": round + 1,
                "requests": prompts.len(),
                "requests_per_s": prompts.len() as f64 / seconds,
                "seconds": seconds,
                "prompt_seconds": prompt_s,
                "decode_seconds": decode_s,
                "generated_tokens": generated,
            })
        );
    }
    Ok(())
}
