//! LoRA instruction tuning (BioInstruct, Tran et al. 2024, §2.3: LoRA on a Llama-family base
//! model over curated instructions). So far: turning instruction records into training
//! examples.

pub mod config;
pub mod data;
pub mod optim;
pub mod run;
pub mod trainer;
