//! bioinstruct: a terminal workbench for instruction-tuning language models on biomedical
//! tasks, after BioInstruct (Tran et al., "BioInstruct: instruction tuning of large language
//! models for biomedical natural language processing", JAMIA 2024, arXiv:2310.19975).
//!
//! The modules below hold everything but the terminal interface, so every pane's job can be
//! driven headless from the CLI and from tests; only [`tui`] touches ratatui and crossterm.

pub mod commands;
pub mod config;
pub mod data;
pub mod editor;
pub mod eval;
pub mod model;
pub mod rng;
pub mod selfinstruct;
pub mod serve;
pub mod train;
pub mod tui;
