//! Training examples from instruction records: prompts, loss mask, truncation, shuffling.

mod common;

use bioinstruct::data::{Category, Instruction};
use bioinstruct::train::data::{
    alpaca_prompt, build_examples, shuffle_split, BuildOptions, PromptFormat, IGNORE,
};
use common::tiny;

fn record(
    id: &str,
    category: Category,
    instruction: &str,
    input: &str,
    output: &str,
) -> Instruction {
    Instruction {
        id: id.into(),
        category,
        task: "t".into(),
        instruction: instruction.into(),
        input: input.into(),
        output: output.into(),
        extra: Default::default(),
    }
}

#[test]
fn alpaca_prompts_are_stanford_alpacas() {
    // Reference: PROMPT_DICT in tatsu-lab/stanford_alpaca train.py.
    let with = record(
        "a",
        Category::Qa,
        "Name the drug.",
        "Biguanide.",
        "Metformin.",
    );
    assert_eq!(
        alpaca_prompt(&with),
        "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\nName the drug.\n\n### Input:\nBiguanide.\n\n### Response:\n"
    );
    let without = record("b", Category::Qa, "Name a statin.", "", "Atorvastatin.");
    assert_eq!(
        alpaca_prompt(&without),
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nName a statin.\n\n### Response:\n"
    );
}

#[test]
fn only_response_tokens_carry_loss() {
    let tok = tiny::tokenizer();
    let end = tok.token_to_id("<|im_end|>").expect("end token");
    let r = record("a", Category::Qa, "Name a statin.", "", "Atorvastatin.");
    let options = BuildOptions {
        format: PromptFormat::Alpaca,
        template: None,
        end_token: end,
        max_seq_len: 512,
        categories: &[],
    };
    let (examples, stats) =
        build_examples(std::slice::from_ref(&r), &tok, &options).expect("builds");
    assert_eq!((stats.examples, stats.truncated), (1, 0));
    let e = &examples[0];
    let prompt_len = tok
        .encode(alpaca_prompt(&r), false)
        .expect("encode")
        .get_ids()
        .len();
    assert_eq!(e.input_ids.len(), prompt_len + "Atorvastatin.".len() + 1);
    // Targets: the response and the end token, each predicted from the position before it.
    let targets: Vec<u32> = e
        .labels
        .iter()
        .filter(|&&l| l != IGNORE)
        .map(|&l| l as u32)
        .collect();
    assert_eq!(
        tok.decode(&targets[..targets.len() - 1], false)
            .expect("decode"),
        "Atorvastatin."
    );
    assert_eq!(targets.last(), Some(&end));
    assert!(e.labels[..prompt_len - 1].iter().all(|&l| l == IGNORE));
    assert_eq!(e.labels.last(), Some(&IGNORE));
}

#[test]
fn long_responses_are_cut_and_long_prompts_dropped_and_counted() {
    let tok = tiny::tokenizer();
    let short = record("short", Category::Gen, "Summarize.", "", &"x".repeat(200));
    let long_prompt = record("long", Category::Gen, &"y".repeat(300), "", "ok");
    let options = BuildOptions {
        format: PromptFormat::Alpaca,
        template: None,
        end_token: 2,
        max_seq_len: 160,
        categories: &[],
    };
    let (examples, stats) = build_examples(&[short, long_prompt], &tok, &options).expect("builds");
    assert_eq!(stats.truncated, 1);
    assert_eq!(stats.dropped, vec!["long".to_string()]);
    assert_eq!(examples[0].input_ids.len(), 160);
    assert!(examples[0].truncated);
}

#[test]
fn the_category_filter_selects_records_for_the_ablation() {
    let tok = tiny::tokenizer();
    let records = vec![
        record("q", Category::Qa, "Q?", "", "A."),
        record("i", Category::Ie, "Extract.", "x", "[]"),
        record("g", Category::Gen, "Write.", "", "Text."),
    ];
    let options = BuildOptions {
        format: PromptFormat::Alpaca,
        template: None,
        end_token: 2,
        max_seq_len: 512,
        categories: &[Category::Ie, Category::Gen],
    };
    let (examples, stats) = build_examples(&records, &tok, &options).expect("builds");
    assert_eq!(stats.records, 2);
    assert_eq!(
        examples.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        vec!["i", "g"]
    );
}

#[test]
fn chat_format_uses_the_template_and_still_masks_the_prompt() {
    let tok = tiny::tokenizer();
    let template = bioinstruct::model::ChatTemplate::builtin("chatml", "", "").expect("chatml");
    let r = record(
        "a",
        Category::Qa,
        "Name a statin.",
        "For adults.",
        "Atorvastatin.",
    );
    let options = BuildOptions {
        format: PromptFormat::Chat,
        template: Some(&template),
        end_token: 2,
        max_seq_len: 512,
        categories: &[],
    };
    let (examples, _) = build_examples(&[r], &tok, &options).expect("builds");
    let text = tok.decode(&examples[0].input_ids, false).expect("decode");
    assert!(text.starts_with("<|im_start|>user\nName a statin.\n\nFor adults.<|im_end|>\n<|im_start|>assistant\nAtorvastatin."), "{text}");
    assert_eq!(examples[0].loss_tokens(), "Atorvastatin.".len() + 1);
}

#[test]
fn shuffling_is_deterministic_and_the_split_is_sized() {
    let tok = tiny::tokenizer();
    let records: Vec<Instruction> = (0..20)
        .map(|i| record(&format!("r{i}"), Category::Qa, "Q?", "", "A."))
        .collect();
    let options = BuildOptions {
        format: PromptFormat::Alpaca,
        template: None,
        end_token: 2,
        max_seq_len: 512,
        categories: &[],
    };
    let (examples, _) = build_examples(&records, &tok, &options).expect("builds");
    let ids = |v: &[bioinstruct::train::data::Example]| {
        v.iter().map(|e| e.id.clone()).collect::<Vec<_>>()
    };
    let (train_a, val_a) = shuffle_split(examples.clone(), 42, 0.1);
    let (train_b, val_b) = shuffle_split(examples.clone(), 42, 0.1);
    let (train_c, _) = shuffle_split(examples, 43, 0.1);
    assert_eq!((ids(&train_a), ids(&val_a)), (ids(&train_b), ids(&val_b)));
    assert_ne!(ids(&train_a), ids(&train_c));
    assert_eq!((train_a.len(), val_a.len()), (18, 2));
}
