//! The Llama-family forward pass (Llama 1/2/3, SmolLM2, Mistral-style grouped-query
//! attention), after Touvron et al. 2023 and Hugging Face's `modeling_llama.py`, laid out as
//! candle-transformers' `llama.rs` / `quantized_llama.rs`.
//!
//! Two entry points share the weights: [`Llama::forward_step`] for generation (KV cache,
//! logits of the last position, candle's fused kernels) and [`Llama::forward_all`] for
//! training (logits of every position, padding mask, ops that have a backward pass).
//! Every projection is a [`Linear`] with an adapter slot where LoRA attaches.

use super::config::{LlamaConfig, RopeLayout};
use super::linear::Linear;
use candle_core::{DType, Device, IndexOp, Result, Tensor};
use candle_nn::kv_cache::KvCache;

/// The seven projections of a block, with Hugging Face's (and PEFT's) names.
pub const PROJECTIONS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// The Hugging Face (and PEFT) module path of projection `name` of block `layer`:
/// `model.layers.N.self_attn.q_proj`, `model.layers.N.mlp.gate_proj`, ...
pub fn module_path(layer: usize, name: &str) -> String {
    let group = if ["gate_proj", "up_proj", "down_proj"].contains(&name) {
        "mlp"
    } else {
        "self_attn"
    };
    format!("model.layers.{layer}.{group}.{name}")
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct Block {
    /// RMSNorm weight before attention, `[hidden]`.
    pub input_layernorm: Tensor,
    /// `[num_heads * head_dim, hidden]`.
    pub q_proj: Linear,
    /// `[num_kv_heads * head_dim, hidden]`.
    pub k_proj: Linear,
    /// `[num_kv_heads * head_dim, hidden]`.
    pub v_proj: Linear,
    /// `[hidden, num_heads * head_dim]`.
    pub o_proj: Linear,
    /// RMSNorm weight before the MLP, `[hidden]`.
    pub post_attention_layernorm: Tensor,
    /// `[intermediate, hidden]`.
    pub gate_proj: Linear,
    /// `[intermediate, hidden]`.
    pub up_proj: Linear,
    /// `[hidden, intermediate]`.
    pub down_proj: Linear,
}

impl Block {
    /// The block's projections by name, in [`PROJECTIONS`] order.
    pub fn projections(&self) -> [(&'static str, &Linear); 7] {
        [
            ("q_proj", &self.q_proj),
            ("k_proj", &self.k_proj),
            ("v_proj", &self.v_proj),
            ("o_proj", &self.o_proj),
            ("gate_proj", &self.gate_proj),
            ("up_proj", &self.up_proj),
            ("down_proj", &self.down_proj),
        ]
    }

    /// The block's projections by name, mutably, in [`PROJECTIONS`] order.
    pub fn projections_mut(&mut self) -> [(&'static str, &mut Linear); 7] {
        [
            ("q_proj", &mut self.q_proj),
            ("k_proj", &mut self.k_proj),
            ("v_proj", &mut self.v_proj),
            ("o_proj", &mut self.o_proj),
            ("gate_proj", &mut self.gate_proj),
            ("up_proj", &mut self.up_proj),
            ("down_proj", &mut self.down_proj),
        ]
    }
}

/// A loaded model.
#[derive(Debug, Clone)]
pub struct Llama {
    /// Hyper-parameters.
    pub config: LlamaConfig,
    /// Token embeddings `[vocab, hidden]`.
    pub embed_tokens: Tensor,
    /// The blocks, input to output.
    pub layers: Vec<Block>,
    /// Final RMSNorm weight `[hidden]`.
    pub norm: Tensor,
    /// Output head `[vocab, hidden]` (the embedding matrix when tied).
    pub lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
}

/// Per-sequence generation state: each layer's keys and values, and how many positions
/// they hold.
#[derive(Debug, Clone)]
pub struct Cache {
    layers: Vec<KvCache>,
    /// Positions already processed.
    pub position: usize,
}

impl Cache {
    /// A cache that continues from this one's positions without recomputing them: scoring
    /// several continuations of one context (evaluation's `loglikelihood`).
    ///
    /// The branch shares this cache's key/value storage. Appending to it writes positions
    /// past [`Cache::position`] in that shared storage, which this cache does not read but
    /// another branch would: use one branch at a time, each made after the last is done.
    pub fn branch(&self) -> Cache {
        self.clone()
    }

    /// Empties the cache for a new sequence.
    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(KvCache::reset);
        self.position = 0;
    }
}

/// Queries per chunk of a long prompt's attention (see [`Llama::forward_step`]).
const CAUSAL_CHUNK: usize = 96;

/// Which kernels a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernels {
    /// candle's fused `rms_norm`, `rope`, `softmax_last_dim` (no backward).
    Fused,
    /// The same kernels with a backward ([`super::autograd`]).
    Differentiable,
}

fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, k: Kernels) -> Result<Tensor> {
    match k {
        Kernels::Fused => candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps as f32),
        Kernels::Differentiable => super::autograd::rms_norm(x, weight, eps as f32),
    }
}

/// One new query per head, `q` `[1, heads, 1, head_dim]`, against keys and values `[1,
/// kv_heads, keys, head_dim]` read where they lie (a cache's buffer narrowed to its filled
/// positions: rows of `head_dim` floats, heads any stride apart), through
/// [`super::attn512::decode_attention`]: `[1, heads, 1, head_dim]`, or `None` off a CPU with
/// AVX-512, for other dtypes, head sizes or layouts (candle's ops then).
fn attend_one(q: &Tensor, key: &Tensor, value: &Tensor, scale: f32) -> Result<Option<Tensor>> {
    let (Ok((1, heads, 1, hd)), Ok((1, kv_heads, keys, kd))) = (q.dims4(), key.dims4()) else {
        return Ok(None);
    };
    let usable = q.device().is_cpu()
        && q.dtype() == DType::F32
        && key.dtype() == DType::F32
        && value.dtype() == DType::F32
        && kd == hd
        && key.dims() == value.dims()
        && keys > 0
        && super::attn512::supported(hd);
    if !usable {
        return Ok(None);
    }
    let q = q.contiguous()?;
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = key.storage_and_layout();
    let (vs, vl) = value.storage_and_layout();
    let head_stride = kl.stride()[1];
    let rows_packed = |l: &candle_core::Layout| {
        l.stride()[2] == hd && l.stride()[3] == 1 && l.stride()[1] == head_stride
    };
    let (
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(qd)),
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(kd)),
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(vd)),
        Some((qa, qb)),
        true,
    ) = (
        &*qs,
        &*ks,
        &*vs,
        ql.contiguous_offsets(),
        rows_packed(kl) && rows_packed(vl) && head_stride >= keys * hd,
    )
    else {
        return Ok(None);
    };
    let y = super::attn512::decode_attention(
        &qd[qa..qb],
        &kd[kl.start_offset()..],
        &vd[vl.start_offset()..],
        heads,
        kv_heads,
        keys,
        hd,
        head_stride,
        scale,
    );
    y.map(|y| Tensor::from_vec(y, (1, heads, 1, hd), q.device()))
        .transpose()
}

/// Additive causal mask `[t, offset + t]`: 0 where query `i` may see key `j`
/// (`j <= offset + i`), `-inf` elsewhere.
fn causal_mask(t: usize, offset: usize, device: &Device) -> Result<Tensor> {
    let len = offset + t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..len).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (t, len), device)
}

impl Llama {
    /// Assembles a model from its parts; computes the RoPE tables for `config.max_context`
    /// positions.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn new(
        config: LlamaConfig,
        embed_tokens: Tensor,
        layers: Vec<Block>,
        norm: Tensor,
        lm_head: Linear,
    ) -> Result<Llama> {
        let device = embed_tokens.device().clone();
        let inv_freq = config.rope_inv_freq();
        let half = inv_freq.len();
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), &device)?;
        let positions = Tensor::arange(0u32, config.max_context as u32, &device)?
            .to_dtype(DType::F32)?
            .reshape((config.max_context, 1))?;
        let angles = positions.matmul(&inv_freq)?;
        let dtype = embed_tokens.dtype();
        Ok(Llama {
            cos: angles.cos()?.to_dtype(dtype)?,
            sin: angles.sin()?.to_dtype(dtype)?,
            config,
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// The dtype of activations.
    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    /// The dtype of returned logits: f32, or f64 for an f64 model (gradient checks).
    fn logits_dtype(&self) -> DType {
        if self.dtype() == DType::F64 {
            DType::F64
        } else {
            DType::F32
        }
    }

    /// An empty cache for sequences of up to `max_len` tokens (prompt plus generation),
    /// capped to the model's context.
    pub fn new_cache(&self, max_len: usize) -> Cache {
        let max_len = max_len.clamp(1, self.config.max_context);
        Cache {
            layers: (0..self.config.num_layers)
                .map(|_| KvCache::new(2, max_len))
                .collect(),
            position: 0,
        }
    }

    /// Every projection with its PEFT module path (`model.layers.N.self_attn.q_proj`,
    /// `model.layers.N.mlp.gate_proj`, …), for attaching adapters.
    pub fn projections_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, block) in self.layers.iter_mut().enumerate() {
            for (name, linear) in block.projections_mut() {
                out.push((module_path(i, name), linear));
            }
        }
        out
    }

    fn rope(&self, x: &Tensor, offset: usize, k: Kernels) -> Result<Tensor> {
        let (_b, _h, t, _d) = x.dims4()?;
        let cos = self.cos.narrow(0, offset, t)?;
        let sin = self.sin.narrow(0, offset, t)?;
        let x = x.contiguous()?;
        match (self.config.rope_layout, k) {
            (RopeLayout::Halves, Kernels::Fused) => candle_nn::rotary_emb::rope(&x, &cos, &sin),
            (RopeLayout::Halves, Kernels::Differentiable) => {
                super::autograd::rope(&x, &cos, &sin, false)
            }
            (RopeLayout::Interleaved, Kernels::Fused) => {
                candle_nn::rotary_emb::rope_i(&x, &cos, &sin)
            }
            (RopeLayout::Interleaved, Kernels::Differentiable) => {
                super::autograd::rope(&x, &cos, &sin, true)
            }
        }
    }

    /// Grouped-query attention of block `block` over `x` `[b, t, hidden]`.
    /// `kv` appends to a cache (generation) or is `None` (training). `mask` is additive,
    /// broadcastable to `[b, num_heads, t, kv_len]` (`[t, kv_len]`, or `[b, 1, t, kv_len]`
    /// with padding).
    fn attention(
        &self,
        block: &Block,
        x: &Tensor,
        offset: usize,
        kv: Option<&mut KvCache>,
        mask: Option<&Tensor>,
        k: Kernels,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, t, _) = x.dims3()?;
        let cached = kv.is_some();
        let (nh, nkv, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let [q, key, value]: [Tensor; 3] =
            Linear::forward_shared(&[&block.q_proj, &block.k_proj, &block.v_proj], x)?
                .try_into()
                .map_err(|_| candle_core::Error::Msg("q, k, v projections".into()))?;
        let q = q.reshape((b, t, nh, hd))?.transpose(1, 2)?;
        let key = key.reshape((b, t, nkv, hd))?.transpose(1, 2)?;
        let value = value
            .reshape((b, t, nkv, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = self.rope(&q, offset, k)?;
        let key = self.rope(&key, offset, k)?;
        let (key, value) = match kv {
            // One new token reads the cache in place: candle's matmul takes the narrowed
            // buffer's batch stride, so copying every cached key and value each step
            // (about 14 MB a token at 300 positions for SmolLM2) would buy nothing.
            Some(cache) if t == 1 => cache.append(&key, &value)?,
            Some(cache) => {
                let (key, value) = cache.append(&key, &value)?;
                (key.contiguous()?, value.contiguous()?)
            }
            None => (key, value),
        };
        let rep = nh / nkv;
        let scale = 1.0 / (hd as f64).sqrt();
        if t > 1
            && (b == 1 || !cached)
            && mask.is_some_and(|m| m.rank() == 2)
            && q.device().is_cpu()
            && q.dtype() == DType::F32
            && super::attn512::supported(hd)
        {
            // A prompt, or a training sequence, on a CPU with AVX-512: one fused pass straight
            // into o_proj's layout (and for training one fused backward).
            let op = super::attn512::CausalAttention {
                scale: scale as f32,
            };
            let q = q.contiguous()?;
            let y = match k {
                Kernels::Fused => q.apply_op3_no_bwd(&key, &value, &op)?,
                Kernels::Differentiable => q.apply_op3(&key.contiguous()?, &value, op)?,
            };
            return block.o_proj.forward(&y);
        }
        let one = if k == Kernels::Fused && t == 1 && b == 1 {
            attend_one(&q, &key, &value, scale as f32)?
        } else {
            None
        };
        let y = if let Some(y) = one {
            y
        } else if k == Kernels::Differentiable {
            // Training: the query heads that share a key/value head side by side, [b, nkv,
            // rep·t, hd], so keys and values are not copied `rep` times (nor their gradients
            // summed back), and scale, mask and softmax as one node with a backward.
            let q = q.contiguous()?.reshape((b, nkv, rep * t, hd))?;
            let scores = q.matmul(&key.t()?)?.reshape((b, nh, t, t))?;
            let probs = super::autograd::scaled_masked_softmax(&scores, scale, mask)?;
            probs
                .reshape((b, nkv, rep * t, t))?
                .matmul(&value)?
                .reshape((b, nh, t, hd))?
        } else if t == 1 && rep > 1 {
            // Decoding one token: group the query heads by the key/value head they share,
            // [b, nkv, rep, hd], instead of copying keys and values `rep` times.
            let q = q.reshape((b, nkv, rep, hd))?;
            let probs = candle_nn::ops::softmax_last_dim(&(q.matmul(&key.t()?)? * scale)?)?;
            probs.matmul(&value)?.reshape((b, nh, 1, hd))?
        } else if t > CAUSAL_CHUNK && b == 1 && mask.is_some_and(|m| m.rank() == 2) {
            // A long prompt: queries in chunks, each against the keys it may see only, so the
            // masked half of the t × t scores is never computed.
            let key = candle_transformers::utils::repeat_kv(key, rep)?.contiguous()?;
            let value = candle_transformers::utils::repeat_kv(value, rep)?.contiguous()?;
            let mask = mask.ok_or_else(|| candle_core::Error::Msg("causal mask".into()))?;
            let kv_len = key.dim(2)?;
            let mut chunks = Vec::with_capacity(t.div_ceil(CAUSAL_CHUNK));
            for start in (0..t).step_by(CAUSAL_CHUNK) {
                let len = CAUSAL_CHUNK.min(t - start);
                let visible = kv_len - t + start + len;
                let q_c = q.narrow(2, start, len)?;
                let k_c = key.narrow(2, 0, visible)?;
                let v_c = value.narrow(2, 0, visible)?.contiguous()?;
                let scores = (q_c.matmul(&k_c.t()?)? * scale)?;
                let m_c = mask.narrow(0, start, len)?.narrow(1, 0, visible)?;
                let probs = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&m_c)?)?;
                chunks.push(probs.matmul(&v_c)?);
            }
            Tensor::cat(&chunks, 2)?
        } else {
            // Hugging Face's `repeat_kv` layout, as candle-transformers' quantized_llama:
            // the same matmul shapes give the same float results.
            let key = candle_transformers::utils::repeat_kv(key, rep)?;
            let value = candle_transformers::utils::repeat_kv(value, rep)?.contiguous()?;
            let scores = (q.matmul(&key.t()?)? * scale)?;
            let scores = match mask {
                Some(m) => scores.broadcast_add(m)?,
                None => scores,
            };
            candle_nn::ops::softmax_last_dim(&scores)?.matmul(&value)?
        };
        let y = y.transpose(1, 2)?.reshape((b, t, nh * hd))?;
        block.o_proj.forward(&y)
    }

    fn mlp(block: &Block, x: &Tensor) -> Result<Tensor> {
        let [gate, up]: [Tensor; 2] =
            Linear::forward_shared(&[&block.gate_proj, &block.up_proj], x)?
                .try_into()
                .map_err(|_| candle_core::Error::Msg("gate and up projections".into()))?;
        block.down_proj.forward(&Self::silu_mul(&gate, &up)?)
    }

    /// `silu(gate) * up`, the MLP's hidden activation: on a CPU with AVX-512, one pass on all
    /// cores instead of candle's serial scalar `exp`.
    fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        let fused =
            gate.device().is_cpu() && gate.dtype() == DType::F32 && super::gemm512::available();
        if fused {
            gate.contiguous()?
                .apply_op2(&up.contiguous()?, super::silu512::SiluMul)
        } else {
            candle_nn::ops::silu(gate)? * up
        }
    }

    fn blocks(
        &self,
        ids: &Tensor,
        offset: usize,
        mut cache: Option<&mut Cache>,
        mask: Option<&Tensor>,
        k: Kernels,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let mut x = self
            .embed_tokens
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.config.hidden_size))?;
        for (i, block) in self.layers.iter().enumerate() {
            let kv = cache.as_deref_mut().and_then(|c| c.layers.get_mut(i));
            let h = rms_norm(&x, &block.input_layernorm, self.config.rms_norm_eps, k)?;
            x = (x + self.attention(block, &h, offset, kv, mask, k)?)?;
            let h = rms_norm(
                &x,
                &block.post_attention_layernorm,
                self.config.rms_norm_eps,
                k,
            )?;
            x = (x + Self::mlp(block, &h)?)?;
        }
        rms_norm(&x, &self.norm, self.config.rms_norm_eps, k)
    }

    /// Batched decode: one new token for each of several sequences, each with its own cache
    /// at its own position (`ids[j]` continues `caches[j]`). The projections and the MLP run
    /// once on all the rows (`[n, hidden]`); rotary embedding and attention run per
    /// sequence against its own cache. Returns the next-token logits `[n, vocab]` (f32; f64
    /// for an f64 model). Each row equals what [`Llama::forward_step`] gives that sequence
    /// alone: the kernels compute rows independently.
    ///
    /// # Errors
    /// [`candle_core::Error`] when `ids` and `caches` differ in length, either is empty, or a
    /// cache is full.
    pub fn forward_decode(&self, ids: &[u32], caches: &mut [&mut Cache]) -> Result<Tensor> {
        let models = vec![self; ids.len()];
        self.forward_decode_rows(ids, caches, &models)
    }

    /// As [`Llama::forward_decode`], row `j` through `models[j]`: models that share this
    /// one's weights (clones of one base, as `bioinstruct serve`'s base and adapters are),
    /// each with its own adapters in its projections' slots. Every base projection runs
    /// once on all the rows; each adapter runs on its own rows only (S-LoRA's and Punica's
    /// batching of several LoRA adapters over one base, Sheng et al. 2023, Chen et al. 2023),
    /// so a batch may mix the base and any adapters. Each row equals what `models[j]`'s
    /// [`Llama::forward_step`] gives that sequence alone, as for [`Llama::forward_decode`].
    ///
    /// # Errors
    /// As [`Llama::forward_decode`]; also `models` not one per token, or a model whose
    /// base weights are not this one's.
    pub fn forward_decode_rows(
        &self,
        ids: &[u32],
        caches: &mut [&mut Cache],
        models: &[&Llama],
    ) -> Result<Tensor> {
        let n = ids.len();
        if n == 0 || n != caches.len() || n != models.len() {
            candle_core::bail!(
                "batched decode: {n} tokens for {} caches and {} models",
                caches.len(),
                models.len()
            );
        }
        for (j, m) in models.iter().enumerate() {
            if !std::ptr::eq(*m, self)
                && models[..j].iter().all(|o| !std::ptr::eq(*o, *m))
                && !self.shares_weights(m)
            {
                candle_core::bail!(
                    "batched decode: row {j}'s model does not share the base weights of the batch"
                );
            }
        }
        let k = Kernels::Fused;
        let eps = self.config.rms_norm_eps;
        let ids_t = Tensor::new(ids, self.device())?;
        let mut x =
            self.embed_tokens
                .index_select(&ids_t, 0)?
                .reshape((n, 1, self.config.hidden_size))?;
        for (i, block) in self.layers.iter().enumerate() {
            let rows: Vec<&Block> = models.iter().map(|m| &m.layers[i]).collect();
            let h = rms_norm(&x, &block.input_layernorm, eps, k)?;
            x = (x + self.attention_decode(block, &rows, &h, i, caches)?)?;
            let h = rms_norm(&x, &block.post_attention_layernorm, eps, k)?;
            x = (x + Self::mlp_decode(block, &rows, &h)?)?;
        }
        for cache in caches.iter_mut() {
            cache.position += 1;
        }
        let h = rms_norm(&x, &self.norm, eps, k)?.squeeze(1)?;
        let heads: Vec<&Linear> = models.iter().map(|m| &m.lm_head).collect();
        Linear::add_row_adapters(self.lm_head.forward_base(&h)?, &h, &heads)?
            .to_dtype(self.logits_dtype())
    }

    /// Whether `other` multiplies by this model's very weights, projection by projection
    /// (the same tensors in memory, whatever the adapters).
    fn shares_weights(&self, other: &Llama) -> bool {
        self.layers.len() == other.layers.len()
            && self.lm_head.shares_base(&other.lm_head)
            && self.layers.iter().zip(&other.layers).all(|(a, b)| {
                a.projections()
                    .iter()
                    .zip(b.projections())
                    .all(|((_, p), (_, q))| p.shares_base(q))
            })
    }

    /// [`Llama::mlp`] for decode rows `x` `[n, 1, hidden]`, row `j` with the adapters of
    /// `rows[j]` (the same layer of a model sharing `block`'s weights).
    fn mlp_decode(block: &Block, rows: &[&Block], x: &Tensor) -> Result<Tensor> {
        let pick = |f: fn(&Block) -> &Linear| rows.iter().map(|b| f(b)).collect::<Vec<_>>();
        let [gate, up]: [Tensor; 2] =
            Linear::forward_shared_base(&[&block.gate_proj, &block.up_proj], x)?
                .try_into()
                .map_err(|_| candle_core::Error::Msg("gate and up projections".into()))?;
        let gate = Linear::add_row_adapters(gate, x, &pick(|b| &b.gate_proj))?;
        let up = Linear::add_row_adapters(up, x, &pick(|b| &b.up_proj))?;
        let hidden = Self::silu_mul(&gate, &up)?;
        Linear::add_row_adapters(
            block.down_proj.forward_base(&hidden)?,
            &hidden,
            &pick(|b| &b.down_proj),
        )
    }

    /// [`Llama::attention`] for one new token of each of `caches`' sequences: `x` `[n, 1,
    /// hidden]`; the projections batched, rotary embedding and attention per sequence (at
    /// its cache's position, against its keys and values of layer `layer`).
    fn attention_decode(
        &self,
        block: &Block,
        rows: &[&Block],
        x: &Tensor,
        layer: usize,
        caches: &mut [&mut Cache],
    ) -> Result<Tensor> {
        let c = &self.config;
        let n = x.dim(0)?;
        let (nh, nkv, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let pick = |f: fn(&Block) -> &Linear| rows.iter().map(|b| f(b)).collect::<Vec<_>>();
        let [q, key, value]: [Tensor; 3] =
            Linear::forward_shared_base(&[&block.q_proj, &block.k_proj, &block.v_proj], x)?
                .try_into()
                .map_err(|_| candle_core::Error::Msg("q, k, v projections".into()))?;
        let q = Linear::add_row_adapters(q, x, &pick(|b| &b.q_proj))?;
        let key = Linear::add_row_adapters(key, x, &pick(|b| &b.k_proj))?;
        let value = Linear::add_row_adapters(value, x, &pick(|b| &b.v_proj))?;
        let q = q.reshape((n, 1, nh, hd))?.transpose(1, 2)?;
        let key = key.reshape((n, 1, nkv, hd))?.transpose(1, 2)?;
        let value = value.reshape((n, 1, nkv, hd))?.transpose(1, 2)?;
        let rep = nh / nkv;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut ys = Vec::with_capacity(n);
        for (j, cache) in caches.iter_mut().enumerate() {
            let offset = cache.position;
            let kv = cache
                .layers
                .get_mut(layer)
                .ok_or_else(|| candle_core::Error::Msg(format!("no cache for layer {layer}")))?;
            let qj = self.rope(&q.narrow(0, j, 1)?, offset, Kernels::Fused)?;
            let kj = self.rope(&key.narrow(0, j, 1)?, offset, Kernels::Fused)?;
            let vj = value.narrow(0, j, 1)?.contiguous()?;
            // Read in place, as in `attention`'s one-token case.
            let (kj, vj) = kv.append(&kj, &vj)?;
            let y = if let Some(y) = attend_one(&qj, &kj, &vj, scale as f32)? {
                y
            } else if rep > 1 {
                let qj = qj.reshape((1, nkv, rep, hd))?;
                let probs = candle_nn::ops::softmax_last_dim(&(qj.matmul(&kj.t()?)? * scale)?)?;
                probs.matmul(&vj)?.reshape((1, nh, 1, hd))?
            } else {
                let probs = candle_nn::ops::softmax_last_dim(&(qj.matmul(&kj.t()?)? * scale)?)?;
                probs.matmul(&vj)?
            };
            ys.push(y);
        }
        let y = Tensor::cat(&ys, 0)?
            .transpose(1, 2)?
            .reshape((n, 1, nh * hd))?;
        Linear::add_row_adapters(block.o_proj.forward_base(&y)?, &y, &pick(|b| &b.o_proj))
    }

    /// Generation step: feeds `ids` `[b, t]` (the prompt, then one token at a time) at the
    /// cache's position and returns the logits of the last position, `[b, vocab]` in f32 (f64
    /// for an f64 model). A prompt of more than 96 tokens attends in chunks of 96 queries,
    /// each against only the keys it may see (the causal mask's other part is never
    /// computed: about 40% of the attention scores of a 330-token prompt).
    ///
    /// # Errors
    /// [`candle_core::Error`] on shape mismatch or when the sequence outgrows the cache.
    pub fn forward_step(&self, ids: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let h = self.cached_blocks(ids, cache)?;
        let last = h.i((.., h.dim(1)? - 1, ..))?;
        self.lm_head.forward(&last)?.to_dtype(self.logits_dtype())
    }

    /// The blocks over `ids` `[b, t]` at the cache's position, appending to the cache:
    /// hidden states `[b, t, hidden]` after the final norm.
    fn cached_blocks(&self, ids: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let (_b, t) = ids.dims2()?;
        let offset = cache.position;
        let mask = if t > 1 {
            Some(causal_mask(t, offset, self.device())?.to_dtype(self.dtype())?)
        } else {
            None
        };
        let h = self.blocks(ids, offset, Some(cache), mask.as_ref(), Kernels::Fused)?;
        cache.position += t;
        Ok(h)
    }

    /// Scoring step: feeds `ids` `[b, t]` at the cache's position, as
    /// [`Llama::forward_step`], and returns the logits of every fed position, `[b, t, vocab]`
    /// in f32 (f64 for an f64 model): position `i` predicts the token after `ids[.., i]`.
    ///
    /// # Errors
    /// [`candle_core::Error`] on shape mismatch or when the sequence outgrows the cache.
    pub fn forward_logits(&self, ids: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let h = self.cached_blocks(ids, cache)?;
        self.lm_head.forward(&h)?.to_dtype(self.logits_dtype())
    }

    /// Training forward: logits for every position, `[b, t, vocab]` in f32 (f64 for an f64
    /// model), through ops that autograd differentiates. `attention_mask` `[b, t]` (1 for
    /// tokens, 0 for padding) keeps keys that are padding out of the tokens' attention. With
    /// right padding only (each row's ones, then its zeros, as [`crate::train::optim::collate`]
    /// pads), the causal mask alone already does, and it alone is applied: the logits of
    /// padding positions are then unspecified (they carry no loss).
    ///
    /// # Errors
    /// [`candle_core::Error`] on shape mismatch or a sequence longer than the context.
    pub fn forward_all(&self, ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let h = self.forward_hidden_all(ids, attention_mask)?;
        self.logits_of(&h)
    }

    /// [`Self::forward_all`] up to the output head: the final hidden states `[b, t, hidden]`
    /// (after the last RMSNorm), for a loss that applies the head itself
    /// ([`super::head_loss`]).
    ///
    /// # Errors
    /// As [`Self::forward_all`].
    pub fn forward_hidden_all(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > self.config.max_context {
            candle_core::bail!(
                "a sequence of {t} tokens exceeds the model's context of {} tokens",
                self.config.max_context
            );
        }
        let causal = causal_mask(t, 0, self.device())?.to_dtype(self.dtype())?;
        // Right padding only: under the causal mask no token sees a padding key (they all
        // come after it), so the causal mask alone, `[t, t]`, which the fused attention
        // takes, gives every token the same result.
        let right_padded = match attention_mask {
            None => true,
            Some(m) => m
                .to_dtype(DType::U32)?
                .to_vec2::<u32>()?
                .iter()
                .all(|row| row.windows(2).all(|w| w[0] >= w[1])),
        };
        let mask = match attention_mask {
            Some(m) if !right_padded => {
                // 0 for real keys, -f32::MAX for padding keys: [b, 1, 1, t].
                let pad = m
                    .to_dtype(DType::F32)?
                    .affine(-1.0, 1.0)?
                    .affine(f64::from(f32::MAX), 0.0)?
                    .neg()?
                    .reshape((b, 1, 1, t))?
                    .to_dtype(self.dtype())?;
                causal.broadcast_add(&pad)?
            }
            _ => causal,
        };
        self.blocks(ids, 0, None, Some(&mask), Kernels::Differentiable)
    }

    /// The output head on final hidden states `h` `[.., hidden]`: logits `[.., vocab]` in the
    /// model's logits dtype.
    ///
    /// # Errors
    /// Shape mismatch.
    pub fn logits_of(&self, h: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(h)?.to_dtype(self.logits_dtype())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_causal_mask_lets_each_query_see_the_prefix_and_itself() -> Result<()> {
        let m = causal_mask(2, 3, &Device::Cpu)?.to_vec2::<f32>()?;
        let inf = f32::NEG_INFINITY;
        assert_eq!(m, vec![vec![0., 0., 0., 0., inf], vec![0., 0., 0., 0., 0.]]);
        Ok(())
    }
}
