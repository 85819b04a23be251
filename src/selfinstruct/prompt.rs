//! The teacher's prompt (Stanford Alpaca's `prompt.txt` approach, adapted to biomedicine):
//! a requirements list, then `k` seed tasks in the numbered format, then a request for tasks
//! `k + 1` to `num_tasks` in the same format (a chat model answers a request better than it
//! continues a list). The template is `configs/self-instruct-prompt.txt`
//! (minijinja), embedded as the default; a user's copy can replace it.

use crate::data::Instruction;
use crate::rng::XorShift64Star;

/// The bundled template.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../configs/self-instruct-prompt.txt");

/// `k` distinct records of `pool` chosen at random (partial Fisher–Yates on a seeded
/// generator); all of them, shuffled, when the pool is smaller.
pub fn sample<'a>(
    pool: &'a [Instruction],
    k: usize,
    rng: &mut XorShift64Star,
) -> Vec<&'a Instruction> {
    let mut idx: Vec<usize> = (0..pool.len()).collect();
    let k = k.min(pool.len());
    for i in 0..k {
        let j = i + (rng.next_u64() % (pool.len() - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx[..k].iter().map(|&i| &pool[i]).collect()
}

/// Renders `template` with `seeds` as tasks 1..=k, asking for `num_tasks` tasks in all with
/// outputs under `word_limit` words. With `continuation` (a teacher that continues text,
/// [`super::teacher::TeacherApi::Completions`]) the prompt ends at `k+1. Category:` instead
/// of with a request.
///
/// # Errors
/// The template does not parse or render (the message names the line).
pub fn render(
    template: &str,
    seeds: &[&Instruction],
    num_tasks: usize,
    word_limit: usize,
    continuation: bool,
) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.add_template("prompt", template)
        .map_err(|e| format!("self-instruct prompt template: {e}"))?;
    let seeds: Vec<serde_json::Value> = seeds
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({
                "number": i + 1,
                "category": s.category.as_str(),
                "instruction": s.instruction,
                "input": s.input,
                "output": s.output,
            })
        })
        .collect();
    env.get_template("prompt")
        .and_then(|t| {
            t.render(minijinja::context! {
                seeds => minijinja::value::Serde(&seeds),
                num_tasks => num_tasks,
                word_limit => word_limit,
                next_number => seeds.len() + 1,
                continuation => continuation,
            })
        })
        .map_err(|e| format!("self-instruct prompt template: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Category;

    fn seed(id: &str, input: &str) -> Instruction {
        Instruction {
            id: id.into(),
            category: Category::Ie,
            task: "t".into(),
            instruction: format!("Instruction of {id}."),
            input: input.into(),
            output: format!("Output of {id}."),
            extra: Default::default(),
        }
    }

    #[test]
    fn the_prompt_numbers_the_seeds_and_primes_the_next_task() {
        let (a, b) = (seed("s-1", ""), seed("s-2", "Note: BP 150/95."));
        let text = render(DEFAULT_TEMPLATE, &[&a, &b], 20, 100, false).expect("renders");
        assert!(text.contains("set of 20 diverse biomedical task instructions"));
        assert!(text.contains("under 100 words"));
        assert!(text.contains(
            "###\n1. Category: ie\n1. Instruction: Instruction of s-1.\n1. Input:\n<noinput>\n1. Output:\nOutput of s-1.\n"
        ));
        assert!(text.contains("2. Input:\nNote: BP 150/95.\n"));
        assert!(
            text.trim_end()
                .ends_with("###\nNow write tasks 3 to 20 in exactly the same format: each task has the four lines \"Category:\", \"Instruction:\", \"Input:\" and \"Output:\", each numbered with the task's number, and tasks are separated by ###."),
            "{text}"
        );
        let one = render(DEFAULT_TEMPLATE, &[&a, &b], 3, 100, false).expect("renders");
        assert!(
            one.trim_end().ends_with("Now write task 3, a new task unlike the ones above, in exactly the same format: the four lines \"3. Category:\", \"3. Instruction:\", \"3. Input:\" and \"3. Output:\"."),
            "{one}"
        );
        let go_on = render(DEFAULT_TEMPLATE, &[&a, &b], 20, 100, true).expect("renders");
        assert!(
            go_on.ends_with("Output of s-2.\n\n###\n3. Category:"),
            "{go_on:?}"
        );
    }

    #[test]
    fn sampling_is_seeded_and_distinct() {
        let pool: Vec<Instruction> = (0..10).map(|i| seed(&format!("s-{i}"), "")).collect();
        let pick = |s| {
            sample(&pool, 3, &mut XorShift64Star::new(s))
                .iter()
                .map(|r| r.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(pick(1), pick(1));
        assert_ne!(pick(1), pick(2));
        let p = pick(3);
        assert!(p[0] != p[1] && p[1] != p[2] && p[0] != p[2]);
        assert_eq!(sample(&pool, 50, &mut XorShift64Star::new(1)).len(), 10);
    }
}
