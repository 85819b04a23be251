//! The model checks of `scripts/device-check.sh`, for a machine with an NVIDIA GPU:
//! `device_check GGUF DEVICE` (DEVICE `cuda:0`; `cpu` runs the same checks CPU against CPU,
//! which is how it is tried on a machine without a GPU).
//!
//! 1. **Logits**: a clinical paragraph through the GGUF's weights dequantized to float, on
//!    the CPU (f32) and on DEVICE (bf16 weights and activations, candle's CUDA kernels).
//!    Reported: both perplexities, the share of positions whose most likely next token is
//!    the same, the largest absolute logit difference. Tolerance (bf16 keeps 8 bits of
//!    mantissa, so each logit moves by about 1%): perplexity within 3% of the CPU's, the
//!    same top-1 token at 95% of positions or more.
//! 2. **Generation**: a chat prompt, then up to 128 greedy tokens, on DEVICE with the
//!    file's own blocks (`gguf_compute = "keep"`: candle's quantized CUDA kernels) and on
//!    the CPU: prompt and generation tokens/s.
//!
//! Prints one JSON object per check (`{"check", …, "pass"}`) and exits 1 if any fails.
#![allow(clippy::unwrap_used)]

use bioinstruct::model::{generate, load_gguf, GgufCompute, LoadOptions, LoadedModel, Sampling};
use candle_core::{DType, Device, Tensor};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::AtomicBool;

const PARAGRAPH: &str = "Metformin is the preferred initial pharmacologic agent for type 2 \
    diabetes. It lowers hepatic glucose production, rarely causes hypoglycemia, and is weight \
    neutral. Gastrointestinal side effects are common at first and can be reduced by starting \
    at a low dose and taking it with meals. It should be avoided when the eGFR is below 30.";

const QUESTION: &str = "A 67-year-old woman with type 2 diabetes and an eGFR of 28 asks whether \
    she can keep taking metformin. Explain the recommendation, the reason for it, and two \
    alternatives a clinician might consider, in plain language suitable for the patient.";

/// Next-token logits at every position of `ids` (all but the last as input), `[t, vocab]`
/// in f32 on the CPU.
fn logits(m: &LoadedModel, ids: &[u32]) -> anyhow::Result<Tensor> {
    let device = m.model.device();
    let input = Tensor::new(&ids[..ids.len() - 1], device)?.unsqueeze(0)?;
    Ok(m.model
        .forward_all(&input, None)?
        .squeeze(0)?
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?)
}

fn perplexity(logits: &Tensor, ids: &[u32]) -> anyhow::Result<f64> {
    let logp = candle_nn::ops::log_softmax(logits, 1)?;
    let targets = Tensor::new(&ids[1..], &Device::Cpu)?.unsqueeze(1)?;
    let nll = logp.gather(&targets, 1)?.mean_all()?.to_scalar::<f32>()?;
    Ok(f64::from(-nll).exp())
}

fn speed(m: &LoadedModel) -> anyhow::Result<serde_json::Value> {
    let template = m.template(None)?;
    let prompt = template.render(
        &[bioinstruct::model::ChatMessage::new("user", QUESTION)],
        true,
    )?;
    let ids = m.encode(&prompt)?;
    let stats = generate(
        m,
        &ids,
        &Sampling::greedy(128),
        &AtomicBool::new(false),
        |_| {},
    )?;
    Ok(json!({
        "prompt_tokens": stats.prompt_tokens,
        "prompt_tokens_per_s": stats.prompt_tokens_per_second(),
        "generated_tokens": stats.generated_tokens,
        "generation_tokens_per_s": stats.decode_steps as f64 / stats.decode_seconds.max(f64::EPSILON),
    }))
}

fn main() -> anyhow::Result<()> {
    bioinstruct::model::pin_thread_count();
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 3, "usage: device_check GGUF DEVICE");
    let (gguf, device) = (Path::new(&args[1]), args[2].as_str());
    let mut pass = true;

    let cpu = load_gguf(gguf, &LoadOptions::for_device("cpu", GgufCompute::Float)?)?;
    let gpu_options = LoadOptions::for_device(device, GgufCompute::Float)?;
    let gpu = load_gguf(gguf, &gpu_options)?;
    let ids = cpu.encode(PARAGRAPH)?;
    let (a, b) = (logits(&cpu, &ids)?, logits(&gpu, &ids)?);
    let (ppl_cpu, ppl_dev) = (perplexity(&a, &ids)?, perplexity(&b, &ids)?);
    let (top_a, top_b) = (
        a.argmax(1)?.to_vec1::<u32>()?,
        b.argmax(1)?.to_vec1::<u32>()?,
    );
    let agree =
        top_a.iter().zip(&top_b).filter(|(x, y)| x == y).count() as f64 / top_a.len() as f64;
    let max_diff = (&a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
    let ppl_rel = (ppl_dev - ppl_cpu).abs() / ppl_cpu;
    let ok = ppl_rel <= 0.03 && agree >= 0.95;
    pass &= ok;
    println!(
        "{}",
        json!({"check": "logits", "device": device,
            "dtype": format!("{:?}", gpu_options.dtype).to_lowercase(), "positions": top_a.len(),
            "perplexity_cpu": ppl_cpu, "perplexity_device": ppl_dev, "perplexity_rel": ppl_rel,
            "top1_agreement": agree, "max_abs_logit_diff": max_diff, "pass": ok})
    );
    drop((cpu, gpu));

    for (name, dev) in [("device", device), ("cpu", "cpu")] {
        let m = load_gguf(gguf, &LoadOptions::for_device(dev, GgufCompute::Keep)?)?;
        let mut s = speed(&m)?;
        let ok = s["generated_tokens"].as_u64().is_some_and(|n| n > 1);
        pass &= ok;
        s["check"] = json!(format!("generation on {name}"));
        s["device"] = json!(dev);
        s["pass"] = json!(ok);
        println!("{s}");
    }
    if !pass {
        std::process::exit(1);
    }
    Ok(())
}
