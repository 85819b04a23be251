//! Prints, as a JSON array, the token ids of `scripts/bench-generate.sh`'s prompt: a
//! clinical question with a patient summary, through the model's own chat template.
//! Usage: `bench_prompt_ids GGUF`
#![allow(clippy::unwrap_used)]

use bioinstruct::model::{load_gguf, ChatMessage, LoadOptions};

const PROMPT: &str =
    "A 58-year-old man with type 2 diabetes (HbA1c 8.4% on metformin 1000 mg twice daily), \
hypertension treated with lisinopril 20 mg daily, and a myocardial infarction two years ago asks \
whether he should add another glucose-lowering drug. His eGFR is 62 mL/min/1.73 m2, his BMI is 33, \
and he reports no hypoglycemia. Which second agent would you recommend, why, and what should be \
monitored after starting it? Answer in a short paragraph for a primary care physician.";

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: bench_prompt_ids GGUF"))?;
    let loaded = load_gguf(std::path::Path::new(&path), &LoadOptions::default())?;
    let text = loaded
        .template(None)?
        .render(&[ChatMessage::new("user", PROMPT)], true)?;
    println!("{}", serde_json::to_string(&loaded.encode(&text)?)?);
    Ok(())
}
