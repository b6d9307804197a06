//! Tokenizers, through the `tokenizers` crate: from a `tokenizer.json`, or rebuilt from the
//! vocabulary and merges embedded in a GGUF (GPT-2-style byte-level BPE).

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::error::{Error, Result};
use crate::weights::GgufFile;

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// LLaMA 3's split regex (Hugging Face `tokenizer.json`), digits in groups of up to three.
const REGEX_LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split regex: as LLaMA 3's but one digit per piece.
const REGEX_QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A text tokenizer with the model's special token ids.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    /// GGUF `tokenizer.ggml.add_bos_token`; for tokenizer.json its post-processor decides.
    add_bos: bool,
    from_json: bool,
}

fn tk_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Loads from a model directory (its `tokenizer.json`), a `.json` file, or a GGUF file.
    pub fn load(path: &Path) -> Result<Self> {
        if path.is_dir() {
            let mut t = Self::from_json_file(&path.join("tokenizer.json"))?;
            // config.json's special ids take precedence over the name-based guess.
            let cfg = path.join("config.json");
            if cfg.is_file() {
                if let Ok(c) = crate::config::ModelConfig::from_hf_json_file(&cfg) {
                    t.bos = c.bos_token_id.or(t.bos);
                    t.eos = c.eos_token_id.or(t.eos);
                }
            }
            Ok(t)
        } else if path.extension().is_some_and(|e| e == "json") {
            Self::from_json_file(path)
        } else {
            Self::from_gguf(path)
        }
    }

    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no tokenizer.json"),
            ));
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self::from_inner(inner))
    }

    /// Wraps an already-built `tokenizers::Tokenizer`. BOS/EOS ids are guessed from common token
    /// names (`<s>`, `<|endoftext|>`...); [`load`](Self::load) on a model directory prefers the
    /// ids in its `config.json`.
    pub fn from_inner(inner: tokenizers::Tokenizer) -> Self {
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let bos = find(&["<|begin_of_text|>", "<s>", "<|startoftext|>"]);
        let eos = find(&["<|end_of_text|>", "</s>", "<|endoftext|>", "<|im_end|>"]);
        Tokenizer {
            inner,
            bos,
            eos,
            add_bos: false,
            from_json: true,
        }
    }

    /// Builds the tokenizer embedded in a GGUF file (`tokenizer.ggml.model = gpt2`).
    pub fn from_gguf(path: &Path) -> Result<Self> {
        let src = GgufFile::open(path)?;
        Self::from_gguf_file(&src)
    }

    /// Builds the tokenizer embedded in an opened GGUF file.
    pub fn from_gguf_file(src: &GgufFile) -> Result<Self> {
        let path = src.path();
        let model = src.meta_str("tokenizer.ggml.model")?.unwrap_or("(missing)");
        if model != "gpt2" {
            return Err(Error::Unsupported(format!(
                "GGUF tokenizer model {model} (only gpt2-style BPE; pass a tokenizer.json instead)"
            )));
        }
        let tokens = src
            .meta_str_array("tokenizer.ggml.tokens")?
            .ok_or_else(|| Error::gguf(path, "missing tokenizer.ggml.tokens"))?;
        let merges = src
            .meta_str_array("tokenizer.ggml.merges")?
            .ok_or_else(|| Error::gguf(path, "missing tokenizer.ggml.merges"))?;
        let types = src.meta_int_array("tokenizer.ggml.token_type")?;
        if let Some(t) = &types {
            if t.len() != tokens.len() {
                return Err(Error::gguf(
                    path,
                    format!("{} token types for {} tokens", t.len(), tokens.len()),
                ));
            }
        }
        let pre = src
            .meta_str("tokenizer.ggml.pre")?
            .unwrap_or("default")
            .to_string();
        let id = |key: &str| -> Result<Option<u32>> {
            match src.meta_u64(key)? {
                Some(v) if (v as usize) < tokens.len() => Ok(Some(v as u32)),
                Some(v) => Err(Error::gguf(
                    path,
                    format!("{key} = {v} is outside the vocabulary"),
                )),
                None => Ok(None),
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let add_bos = src
            .meta_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(false);
        let mut t = Self::from_bpe_parts(&tokens, &merges, types.as_deref(), &pre)?;
        t.bos = bos;
        t.eos = eos;
        t.add_bos = add_bos;
        Ok(t)
    }

    /// Builds a byte-level BPE tokenizer from a vocabulary (id = position), merges (`"a b"`),
    /// optional GGUF token types (control tokens become special tokens) and llama.cpp's
    /// pre-tokenizer name (`default`/`gpt2`, `smollm`, `llama-bpe`/`llama3`, `qwen2`).
    pub fn from_bpe_parts(
        tokens: &[String],
        merges: &[String],
        types: Option<&[i64]>,
        pre: &str,
    ) -> Result<Self> {
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        if vocab.len() != tokens.len() {
            return Err(Error::Tokenizer(
                "duplicate tokens in the vocabulary".into(),
            ));
        }
        let merges: Vec<(String, String)> = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| {
                        Error::Tokenizer(format!("merge {m:?} is not two space-separated tokens"))
                    })
            })
            .collect::<Result<_>>()?;
        let llama3 = matches!(pre, "llama-bpe" | "llama3" | "smaug-bpe");
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            // LLaMA 3's tokenizer.json sets ignore_merges: whole-word vocabulary hits win.
            .ignore_merges(llama3)
            .build()
            .map_err(tk_err)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let byte_level = |use_regex: bool| ByteLevel::new(false, true, use_regex);
        let split = |re: &str| -> Result<PreTokenizerWrapper> {
            Ok(Split::new(
                SplitPattern::Regex(re.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(tk_err)?
            .into())
        };
        let pre_tok: PreTokenizerWrapper = match pre {
            "default" | "gpt2" | "" => byte_level(true).into(),
            // SmolLM's tokenizer.json: every digit is its own piece, then GPT-2's regex.
            "smollm" => {
                Sequence::new(vec![Digits::new(true).into(), byte_level(true).into()]).into()
            }
            _ if llama3 => {
                Sequence::new(vec![split(REGEX_LLAMA3)?, byte_level(false).into()]).into()
            }
            "qwen2" => {
                inner.with_normalizer(Some(NFC)).map_err(tk_err)?;
                Sequence::new(vec![split(REGEX_QWEN2)?, byte_level(false).into()]).into()
            }
            other => return Err(Error::Unsupported(format!("GGUF pre-tokenizer {other}"))),
        };
        inner.with_pre_tokenizer(Some(pre_tok));
        inner.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
        if let Some(types) = types {
            let special: Vec<AddedToken> = tokens
                .iter()
                .zip(types)
                .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL)
                .map(|(s, _)| AddedToken::from(s.clone(), true))
                .collect();
            let user: Vec<AddedToken> = tokens
                .iter()
                .zip(types)
                .filter(|(_, &t)| t == TOKEN_TYPE_USER_DEFINED)
                .map(|(s, _)| AddedToken::from(s.clone(), false))
                .collect();
            inner.add_special_tokens(special).map_err(tk_err)?;
            inner.add_tokens(user).map_err(tk_err)?;
        }
        Ok(Tokenizer {
            inner,
            bos: None,
            eos: None,
            add_bos: false,
            from_json: false,
        })
    }

    /// Token ids of `text`, with no BOS/EOS added (special-token strings in the text, such as
    /// `<|im_start|>`, still map to their ids).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, false).map_err(tk_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids as the model expects a fresh sequence: with BOS when the tokenizer's
    /// configuration asks for it.
    pub fn encode_for_model(&self, text: &str) -> Result<Vec<u32>> {
        if self.from_json {
            return Ok(self
                .inner
                .encode_fast(text, true)
                .map_err(tk_err)?
                .get_ids()
                .to_vec());
        }
        let mut ids = Vec::new();
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    /// Text of `ids` (special tokens included).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tk_err)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of a token string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Beginning-of-sequence id, if known.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence id, if known.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digits 0–9 plus merged tokens; merge "3 4" has the best rank, so it wins wherever the
    /// pre-tokenizer leaves 3 and 4 in one piece.
    fn digits(pre: &str) -> Tokenizer {
        let merges: Vec<String> = ["3 4", "1 2", "12 3", "4 5", "45 6"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut tokens: Vec<String> = (0..10).map(|d| d.to_string()).collect();
        tokens.extend(["34", "12", "123", "45", "456"].map(String::from));
        Tokenizer::from_bpe_parts(&tokens, &merges, None, pre).unwrap()
    }

    #[test]
    fn pre_tokenizers_split_digits_as_their_models_do() {
        let ids = |pre: &str| digits(pre).encode("1234567").unwrap();
        // GPT-2 regex: one piece "1234567" → 12 34 5 6 7.
        assert_eq!(ids("default"), vec![11, 10, 5, 6, 7]);
        // LLaMA 3: groups of up to three digits "123" "456" "7".
        assert_eq!(ids("llama-bpe"), vec![12, 14, 7]);
        // SmolLM and Qwen2: one digit per piece.
        assert_eq!(ids("smollm"), vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(ids("qwen2"), vec![1, 2, 3, 4, 5, 6, 7]);
        assert!(matches!(
            Tokenizer::from_bpe_parts(&["a".into()], &[], None, "falcon"),
            Err(Error::Unsupported(_))
        ));
        assert!(matches!(
            Tokenizer::from_bpe_parts(&["a".into()], &["a".into()], None, "default"),
            Err(Error::Tokenizer(_))
        ));
    }
}
