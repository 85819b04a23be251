//! Prompt and generation speed of bioinstruct's forward pass on a GGUF model, for
//! `scripts/bench-generate.sh` (which runs llama.cpp on the same file, ids and token count).
//!
//! Usage: `bench_generate GGUF IDS_JSON NEW_TOKENS [keep|q8_0|float]`
//! where IDS_JSON holds the prompt's token ids. Generation is greedy and runs exactly
//! NEW_TOKENS steps (end tokens are not special), like llama.cpp's `--ignore-eos`.
//! Prints one JSON object: prompt tokens, seconds and tokens/s; generated tokens, seconds
//! and tokens/s.
#![allow(clippy::unwrap_used)]

use bioinstruct::model::{load_gguf, GgufCompute, LoadOptions};
use candle_core::{Device, Tensor};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    bioinstruct::model::pin_thread_count();
    bioinstruct::model::malloc::keep_freed_buffers();
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 4,
        "usage: bench_generate GGUF IDS_JSON NEW_TOKENS [keep|q8_0|float]"
    );
    let compute = match args.get(4).map(String::as_str) {
        None | Some("keep") => GgufCompute::Keep,
        Some("q8_0") => GgufCompute::Q8_0,
        Some("float") => GgufCompute::Float,
        Some(other) => anyhow::bail!("unknown compute {other:?}"),
    };
    let ids: Vec<u32> = serde_json::from_str(&std::fs::read_to_string(&args[2])?)?;
    let new_tokens: usize = args[3].parse()?;
    let loaded = load_gguf(
        std::path::Path::new(&args[1]),
        &LoadOptions {
            gguf: compute,
            ..LoadOptions::default()
        },
    )?;
    let model = &loaded.model;
    let mut cache = model.new_cache(ids.len() + new_tokens);

    let start = Instant::now();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let mut logits = model.forward_step(&input, &mut cache)?;
    let prompt_s = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut generated = Vec::with_capacity(new_tokens);
    for _ in 0..new_tokens {
        let next = logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?;
        generated.push(next);
        logits = model.forward_step(
            &Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?,
            &mut cache,
        )?;
    }
    let gen_s = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "engine": format!("bioinstruct ({compute:?})"),
            "prompt_tokens": ids.len(),
            "prompt_s": prompt_s,
            "prompt_tps": ids.len() as f64 / prompt_s,
            "gen_tokens": new_tokens,
            "gen_s": gen_s,
            "gen_tps": new_tokens as f64 / gen_s,
            "first_tokens": &generated[..generated.len().min(8)],
        })
    );
    Ok(())
}
