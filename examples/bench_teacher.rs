//! Local-teacher requests/s with and without reusing the prompts' shared opening
//! (`model::PromptPrefix`), on the generation test's settings (`tests/real_generate.rs`):
//! self-instruct prompts rendered as `bioinstruct generate` renders them for the local
//! teacher (the bundled template, 3 bundled seeds a prompt, 20 tasks asked for, continued as
//! text), `stop = ["###"]`, `max_tokens = 200`, temperature 0.7, top-p 0.95, each request's
//! sampling seed as `LocalTeacher` derives it.
//!
//! Each round runs the same REQUESTS prompts both ways, in alternating order: `generate`
//! (every prompt computed whole) and `generate_reusing` with one `PromptPrefix` (the opening
//! computed once, each request continuing a branch of its cache). Prints one JSON line per
//! round and way (requests/s, prompt and decode seconds, prompt and generated tokens), then
//! the medians and the ratio of requests/s.
//!
//! Usage: `bench_teacher GGUF [REQUESTS] [ROUNDS]` (defaults 8 and 3).
//! `scripts/bench-teacher.sh` runs it beside the code as it was when issue 14 was filed
//! (`scripts/bench_teacher_baseline.rs`, the same prompts and sampling through that
//! version's `generate`).
#![allow(clippy::unwrap_used)]

use bioinstruct::data::Instruction;
use bioinstruct::model::{
    generate, generate_reusing, load_gguf, LoadOptions, LoadedModel, PromptPrefix, Sampling,
};
use bioinstruct::rng::XorShift64Star;
use bioinstruct::selfinstruct::prompt::{render, sample, DEFAULT_TEMPLATE};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// One way's totals over a round's requests.
#[derive(Default)]
struct Totals {
    seconds: f64,
    prompt_seconds: f64,
    decode_seconds: f64,
    prompt_tokens: usize,
    generated_tokens: usize,
    /// Opening tokens the prefix held at the end (0 without reuse).
    prefix_tokens: usize,
}

fn run(
    loaded: &LoadedModel,
    prompts: &[(Vec<u32>, Sampling)],
    reuse: bool,
) -> anyhow::Result<Totals> {
    let cancel = AtomicBool::new(false);
    let mut prefix = PromptPrefix::default();
    let mut t = Totals::default();
    let start = Instant::now();
    for (ids, sampling) in prompts {
        let stats = if reuse {
            generate_reusing(loaded, ids, &mut prefix, sampling, &cancel, |_| {})?
        } else {
            generate(loaded, ids, sampling, &cancel, |_| {})?
        };
        t.prompt_seconds += stats.prompt_seconds;
        t.decode_seconds += stats.decode_seconds;
        t.prompt_tokens += stats.prompt_tokens;
        t.generated_tokens += stats.generated_tokens;
    }
    t.seconds = start.elapsed().as_secs_f64();
    t.prefix_tokens = prefix.len();
    Ok(t)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    bioinstruct::model::pin_thread_count();
    bioinstruct::model::malloc::keep_freed_buffers();
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 2,
        "usage: bench_teacher GGUF [REQUESTS] [ROUNDS]"
    );
    let requests: u64 = args.get(2).map_or(Ok(8), |s| s.parse())?;
    let rounds: usize = args.get(3).map_or(Ok(3), |s| s.parse())?;
    let loaded = load_gguf(std::path::Path::new(&args[1]), &LoadOptions::default())?;
    let seeds: Vec<Instruction> = bioinstruct::config::BUNDLED_SEEDS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    // As `bioinstruct generate` with [generate]'s defaults and the test's stop and limit.
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
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for reuse in order {
            let t = run(&loaded, &prompts, reuse)?;
            let rate = prompts.len() as f64 / t.seconds;
            rates[usize::from(reuse)].push(rate);
            println!(
                "{}",
                serde_json::json!({
                    "round": round + 1,
                    "prefix_reuse": reuse,
                    "requests": prompts.len(),
                    "requests_per_s": rate,
                    "seconds": t.seconds,
                    "prompt_seconds": t.prompt_seconds,
                    "decode_seconds": t.decode_seconds,
                    "prompt_tokens": t.prompt_tokens,
                    "prefix_tokens": t.prefix_tokens,
                    "generated_tokens": t.generated_tokens,
                })
            );
        }
    }
    let (whole, reused) = (median(rates[0].clone()), median(rates[1].clone()));
    println!(
        "{}",
        serde_json::json!({
            "median_requests_per_s_whole_prompt": whole,
            "median_requests_per_s_prefix_reuse": reused,
            "ratio": reused / whole,
        })
    );
    Ok(())
}
