//! Chat templates: the model's own Jinja template (from `tokenizer_config.json` or the GGUF
//! key `tokenizer.chat_template`) rendered with minijinja and its Python-compatibility
//! methods, or a built-in one chosen by name.

use super::ModelError;
use minijinja::{context, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: &str, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// ChatML (`<|im_start|>role\n…<|im_end|>`), as used by SmolLM2 and Qwen.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Llama-2-chat's `[INST]` format: the template of `meta-llama/Llama-2-7b-chat-hf`'s
/// `tokenizer_config.json`.
pub const LLAMA2: &str = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

/// Stanford Alpaca's prompt (`PROMPT_DICT["prompt_no_input"]`), one instruction per user
/// turn; a system message replaces the preamble.
pub const ALPACA: &str = "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{% set loop_messages = messages[1:] %}{% else %}{{ 'Below is an instruction that describes a task. Write a response that appropriately completes the request.\\n\\n' }}{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}{% if message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n### Response:\\n' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}";

/// The built-in templates selectable by name (`--template`).
pub const BUILTIN: [(&str, &str); 3] = [("chatml", CHATML), ("llama2", LLAMA2), ("alpaca", ALPACA)];

/// A chat template ready to render.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    /// Where it came from (`chatml`, `model`, …).
    pub name: String,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// The built-in template `name` (see [`BUILTIN`]).
    ///
    /// # Errors
    /// [`ModelError::Template`] for an unknown name.
    pub fn builtin(
        name: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<ChatTemplate, ModelError> {
        let (_, source) = BUILTIN.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            ModelError::Template(format!(
                "unknown template {name:?} (built-in: {})",
                BUILTIN.map(|(n, _)| n).join(", ")
            ))
        })?;
        Ok(Self::from_source(name, source, bos_token, eos_token))
    }

    /// A template from Jinja source (a model's own).
    pub fn from_source(name: &str, source: &str, bos_token: &str, eos_token: &str) -> ChatTemplate {
        ChatTemplate {
            name: name.to_string(),
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        }
    }

    /// Renders `messages`; with `add_generation_prompt`, ends where the assistant's answer
    /// begins.
    ///
    /// # Errors
    /// [`ModelError::Template`] when the template does not compile or raises (roles that do
    /// not alternate, for Llama-2).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        let err = |e: Error| ModelError::Template(format!("{} template: {e}", self.name));
        env.add_template("chat", &self.source).map_err(err)?;
        env.get_template("chat")
            .map_err(err)?
            .render(context! {
                messages => minijinja::value::Serde(messages),
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.as_str(),
                eos_token => self.eos_token.as_str(),
            })
            .map_err(err)
    }
}

/// The `chat_template` of a `tokenizer_config.json`, if it has one. A list of named templates
/// (newer files) yields the one named `default`.
///
/// # Errors
/// [`ModelError::Config`] naming the file when it is unreadable or not JSON.
pub fn chat_template_from_tokenizer_config(path: &Path) -> Result<Option<String>, ModelError> {
    let err = |problem: String| ModelError::Config {
        path: path.to_path_buf(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    Ok(match value.get("chat_template") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_string),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "You are a careful clinician."),
            ChatMessage::new("user", "What is metformin?"),
            ChatMessage::new("assistant", "A biguanide."),
            ChatMessage::new("user", "Its main risk?"),
        ]
    }

    #[test]
    fn chatml_renders_byte_identical_to_the_reference() {
        // Reference: the ChatML layout of SmolLM2's and Qwen's tokenizer_config.json.
        let t = ChatTemplate::builtin("chatml", "", "").expect("builtin");
        let expected = "<|im_start|>system\nYou are a careful clinician.<|im_end|>\n<|im_start|>user\nWhat is metformin?<|im_end|>\n<|im_start|>assistant\nA biguanide.<|im_end|>\n<|im_start|>user\nIts main risk?<|im_end|>\n<|im_start|>assistant\n";
        assert_eq!(t.render(&conversation(), true).expect("renders"), expected);
    }

    #[test]
    fn llama2_renders_byte_identical_to_the_reference() {
        // Reference: Meta's llama `chat_completion` format (B_INST/E_INST, B_SYS/E_SYS, BOS
        // before each user turn, EOS after each answer), as Llama-2-7b-chat-hf renders it.
        let t = ChatTemplate::builtin("llama2", "<s>", "</s>").expect("builtin");
        let expected = "<s>[INST] <<SYS>>\nYou are a careful clinician.\n<</SYS>>\n\nWhat is metformin? [/INST] A biguanide. </s><s>[INST] Its main risk? [/INST]";
        assert_eq!(t.render(&conversation(), true).expect("renders"), expected);
    }

    #[test]
    fn llama2_refuses_roles_that_do_not_alternate() {
        let t = ChatTemplate::builtin("llama2", "<s>", "</s>").expect("builtin");
        let msgs = vec![ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
        let e = t.render(&msgs, true).expect_err("raises");
        assert!(e.to_string().contains("roles must alternate"), "{e}");
    }

    #[test]
    fn alpaca_renders_stanford_alpacas_prompt() {
        let t = ChatTemplate::builtin("alpaca", "", "").expect("builtin");
        let msgs = vec![ChatMessage::new("user", "List two statins.")];
        assert_eq!(
            t.render(&msgs, true).expect("renders"),
            "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nList two statins.\n\n### Response:\n"
        );
    }

    #[test]
    fn an_unknown_template_name_lists_the_built_in_ones() {
        let e = ChatTemplate::builtin("vicuna", "", "").expect_err("unknown");
        assert!(e.to_string().contains("chatml, llama2, alpaca"), "{e}");
    }
}
