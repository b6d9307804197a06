//! The `__metadata__` of a packed file: reserved keys, the per-layer JSON, the metadata CRC, and
//! the header-level validation shared by `read` and `inspect`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::codec::{parse_crc_hex, Dt};
use super::{check_layer_name, tensor_name, Problem, Scheme, FORMAT_NAME, FORMAT_VERSION};
use crate::act::ActQuant;
use crate::error::{Error, Result};

pub(crate) const KEY_FORMAT: &str = "format";
pub(crate) const KEY_VERSION: &str = "format_version";
pub(crate) const KEY_SOURCE: &str = "source_model";
pub(crate) const KEY_METHOD: &str = "method";
pub(crate) const KEY_LAYERS: &str = "layers";
pub(crate) const KEY_CRC: &str = "metadata_crc32";
/// Keys a writer sets itself; every other `__metadata__` key is a free-form extra.
pub(crate) const RESERVED_KEYS: [&str; 6] = [
    KEY_FORMAT,
    KEY_VERSION,
    KEY_SOURCE,
    KEY_METHOD,
    KEY_LAYERS,
    KEY_CRC,
];

/// What a tensor of a layer holds; its `as_str` is the tensor-name suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    QWeight,
    Zeros,
    S2,
    S1,
    Scales,
    Weight,
    Bias,
    Smooth,
}

impl Role {
    const ALL: [Role; 8] = [
        Role::QWeight,
        Role::Zeros,
        Role::S2,
        Role::S1,
        Role::Scales,
        Role::Weight,
        Role::Bias,
        Role::Smooth,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::QWeight => "qweight",
            Role::Zeros => "zeros",
            Role::S2 => "s2",
            Role::S1 => "s1",
            Role::Scales => "scales",
            Role::Weight => "weight",
            Role::Bias => "bias",
            Role::Smooth => "smooth",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Tensors a scheme requires.
fn required_roles(s: Scheme) -> &'static [Role] {
    match s {
        Scheme::DgqW4 => &[Role::QWeight, Role::Zeros, Role::S2, Role::S1],
        Scheme::SymInt4 | Scheme::SymInt8 => &[Role::QWeight, Role::Scales],
        Scheme::F32 | Scheme::F16 | Scheme::Bf16 => &[Role::Weight],
    }
}

/// Activation quantization as stored: `{"mode": ...}` plus `scale` for the static mode.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActMeta {
    mode: ActMode,
    /// The f32 scale widened to f64: its shortest decimal parses back to exactly that f64 even
    /// with a parser that is off by a few f64 ulps, and narrowing to f32 is then exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scale: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum ActMode {
    None,
    DynamicPerToken,
    StaticPerTensor,
}

impl ActMeta {
    pub(crate) fn from_act(a: ActQuant) -> Self {
        match a {
            ActQuant::None => ActMeta {
                mode: ActMode::None,
                scale: None,
            },
            ActQuant::DynamicPerToken => ActMeta {
                mode: ActMode::DynamicPerToken,
                scale: None,
            },
            ActQuant::StaticPerTensor { scale } => ActMeta {
                mode: ActMode::StaticPerTensor,
                scale: Some(f64::from(scale)),
            },
        }
    }

    fn to_act(&self, layer: &str) -> std::result::Result<ActQuant, Problem> {
        match (self.mode, self.scale) {
            (ActMode::None, None) => Ok(ActQuant::None),
            (ActMode::DynamicPerToken, None) => Ok(ActQuant::DynamicPerToken),
            (ActMode::StaticPerTensor, Some(s)) => {
                let scale = s as f32;
                if scale.is_finite() && scale > 0.0 {
                    Ok(ActQuant::StaticPerTensor { scale })
                } else {
                    Err(Problem::new(
                        layer,
                        format!("static activation scale {s} must be a finite f32 > 0"),
                    ))
                }
            }
            (ActMode::StaticPerTensor, None) => Err(Problem::new(
                layer,
                "static_per_tensor activation lacks its scale",
            )),
            (_, Some(_)) => Err(Problem::new(
                layer,
                "activation scale given for a mode without one",
            )),
        }
    }
}

/// One layer's entry in the `layers` JSON object.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LayerMeta {
    pub scheme: Scheme,
    pub shape: Vec<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_size: Option<usize>,
    pub act: ActMeta,
    /// Role → CRC-32 of the tensor's data bytes (8 lowercase hex digits).
    pub tensors: BTreeMap<String, String>,
}

/// A tensor a layer entry declares, with what the file must hold for it.
#[derive(Debug, Clone)]
pub(crate) struct TensorSpec {
    pub role: Role,
    pub name: String,
    pub dtype: Dt,
    pub shape: Vec<usize>,
    pub crc: u32,
}

/// Dtype and shape of each tensor role for a layer of logical shape `shape`.
pub(crate) fn expected(
    scheme: Scheme,
    shape: &[usize],
    group_size: usize,
    role: Role,
) -> Option<(Dt, Vec<usize>)> {
    let (n, k) = match shape {
        &[n, k] => (n, k),
        _ => (0, 0),
    };
    let groups = k.checked_div(group_size).unwrap_or(0);
    Some(match (scheme, role) {
        (Scheme::DgqW4 | Scheme::SymInt4, Role::QWeight) => (Dt::U8, vec![n, k / 2]),
        (Scheme::SymInt8, Role::QWeight) => (Dt::I8, vec![n, k]),
        (Scheme::DgqW4, Role::Zeros | Role::S2) => (Dt::I8, vec![n, groups]),
        (Scheme::DgqW4, Role::S1) => (Dt::F16, vec![n]),
        (Scheme::SymInt4 | Scheme::SymInt8, Role::Scales) => (Dt::F16, vec![n, groups]),
        (Scheme::F32, Role::Weight) => (Dt::F32, shape.to_vec()),
        (Scheme::F16, Role::Weight) => (Dt::F16, shape.to_vec()),
        (Scheme::Bf16, Role::Weight) => (Dt::Bf16, shape.to_vec()),
        (_, Role::Bias) if shape.len() == 2 => (Dt::F32, vec![n]),
        (_, Role::Smooth) if shape.len() == 2 => (Dt::F32, vec![k]),
        _ => return None,
    })
}

impl LayerMeta {
    /// Checks the logical shape, group size and declared tensors; returns what the file must
    /// hold for each declared tensor, in role order.
    pub(crate) fn specs(&self, layer: &str) -> std::result::Result<Vec<TensorSpec>, Problem> {
        let shape = &self.shape;
        if shape.contains(&0) {
            return Err(Problem::new(
                layer,
                format!("logical shape {shape:?} has a zero dimension"),
            ));
        }
        let g = match (self.scheme.is_quantized(), self.group_size) {
            (true, Some(g)) => {
                let &[_, k] = shape.as_slice() else {
                    return Err(Problem::new(
                        layer,
                        format!("{} needs a 2-D shape [N, K], got {shape:?}", self.scheme),
                    ));
                };
                if g == 0 || k % g != 0 {
                    return Err(Problem::new(
                        layer,
                        format!("group size {g} must be positive and divide K = {k}"),
                    ));
                }
                let packed = matches!(self.scheme, Scheme::DgqW4 | Scheme::SymInt4);
                if packed && (k % 2 != 0 || g % 2 != 0) {
                    return Err(Problem::new(
                        layer,
                        format!(
                            "{} needs K = {k} and group size {g} even (nibble packing)",
                            self.scheme
                        ),
                    ));
                }
                g
            }
            (true, None) => {
                return Err(Problem::new(
                    layer,
                    format!("{} layer lacks group_size", self.scheme),
                ))
            }
            (false, Some(_)) => {
                return Err(Problem::new(
                    layer,
                    format!("{} layer must not have group_size", self.scheme),
                ))
            }
            (false, None) => 0,
        };
        let mut roles = BTreeSet::new();
        for r in self.tensors.keys() {
            let Some(role) =
                Role::parse(r).filter(|&role| expected(self.scheme, shape, g, role).is_some())
            else {
                return Err(Problem::new(
                    tensor_name(layer, r),
                    format!(
                        "tensor role `{r}` is not allowed for a {} layer of shape {shape:?}",
                        self.scheme
                    ),
                ));
            };
            roles.insert(role);
        }
        for &role in required_roles(self.scheme) {
            if !roles.contains(&role) {
                return Err(Problem::new(
                    tensor_name(layer, role.as_str()),
                    format!(
                        "required by scheme {} but not declared in the layer's metadata",
                        self.scheme
                    ),
                ));
            }
        }
        let mut out = Vec::with_capacity(roles.len());
        for role in roles {
            let name = tensor_name(layer, role.as_str());
            let crc_str = self
                .tensors
                .get(role.as_str())
                .map(String::as_str)
                .unwrap_or_default();
            let Some(crc) = parse_crc_hex(crc_str) else {
                return Err(Problem::new(
                    name,
                    format!("CRC-32 `{crc_str}` is not 8 lowercase hex digits"),
                ));
            };
            let Some((dtype, shape)) = expected(self.scheme, shape, g, role) else {
                return Err(Problem::new(name, "role not allowed"));
            };
            out.push(TensorSpec {
                role,
                name,
                dtype,
                shape,
                crc,
            });
        }
        Ok(out)
    }
}

/// CRC-32 over the metadata entries other than `metadata_crc32`, in ascending byte order of
/// keys, each as `key 0x00 value 0x00` (UTF-8).
pub(crate) fn metadata_crc<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> u32 {
    let sorted: BTreeMap<&str, &str> = entries.into_iter().filter(|(k, _)| *k != KEY_CRC).collect();
    let mut h = crc32fast::Hasher::new();
    for (k, v) in sorted {
        h.update(k.as_bytes());
        h.update(&[0]);
        h.update(v.as_bytes());
        h.update(&[0]);
    }
    h.finalize()
}

/// Rejects extras that would shadow a reserved key.
pub(crate) fn check_extras(extras: &BTreeMap<String, String>) -> Result<()> {
    for k in extras.keys() {
        if RESERVED_KEYS.contains(&k.as_str()) {
            return Err(Error::config("metadata", k, "reserved metadata key"));
        }
    }
    Ok(())
}

/// One validated layer entry of the header.
#[derive(Debug, Clone)]
pub(crate) struct ParsedLayer {
    pub name: String,
    pub meta: LayerMeta,
    pub act: ActQuant,
    /// Declared tensors with their `data_offsets` (relative to the data section).
    pub tensors: Vec<(TensorSpec, (usize, usize))>,
}

/// A validated header: everything but the tensor data.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub source_model: String,
    pub method: String,
    pub extras: BTreeMap<String, String>,
    pub layers: Vec<ParsedLayer>,
}

fn meta_key<'a>(m: &'a HashMap<String, String>, key: &str) -> Result<&'a String> {
    m.get(key)
        .ok_or_else(|| Error::format(format!("__metadata__.{key}"), "missing"))
}

/// Validates a parsed safetensors header as a format-v1 header.
pub(crate) fn parse(st: &safetensors::tensor::Metadata) -> Result<Parsed> {
    let Some(m) = st.metadata() else {
        return Err(Error::format(
            "__metadata__",
            "missing: not a dgq packed file",
        ));
    };
    let format = meta_key(m, KEY_FORMAT)?;
    if format != FORMAT_NAME {
        return Err(Error::format(
            "__metadata__.format",
            format!("expected \"{FORMAT_NAME}\", found {format:?}: not a dgq packed file"),
        ));
    }
    let version = meta_key(m, KEY_VERSION)?;
    if *version != FORMAT_VERSION.to_string() {
        return Err(Error::UnsupportedVersion {
            found: version.clone(),
            supported: FORMAT_VERSION,
        });
    }
    let stored = meta_key(m, KEY_CRC)?;
    let Some(stored) = parse_crc_hex(stored) else {
        return Err(Error::format(
            "__metadata__.metadata_crc32",
            format!("{stored:?} is not 8 lowercase hex digits"),
        ));
    };
    let computed = metadata_crc(m.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if stored != computed {
        return Err(Error::format(
            "__metadata__",
            format!("metadata CRC-32 mismatch (stored {stored:08x}, computed {computed:08x}): the header is corrupted"),
        ));
    }
    let source_model = meta_key(m, KEY_SOURCE)?.clone();
    let method = meta_key(m, KEY_METHOD)?.clone();
    let layers: BTreeMap<String, LayerMeta> = serde_json::from_str(meta_key(m, KEY_LAYERS)?)
        .map_err(|e| Error::format("__metadata__.layers", format!("invalid layer JSON: {e}")))?;
    let extras: BTreeMap<String, String> = m
        .iter()
        .filter(|(k, _)| !RESERVED_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    let mut declared = BTreeSet::new();
    let mut out = Vec::with_capacity(layers.len());
    for (name, meta) in layers {
        check_layer_name(&name).map_err(Problem::into_format)?;
        let act = meta.act.to_act(&name).map_err(Problem::into_format)?;
        if act != ActQuant::None && meta.shape.len() != 2 {
            return Err(Error::format(
                &name,
                "activation quantization needs a 2-D [N, K] weight",
            ));
        }
        let specs = meta.specs(&name).map_err(Problem::into_format)?;
        let mut tensors = Vec::with_capacity(specs.len());
        for spec in specs {
            let Some(info) = st.info(&spec.name) else {
                return Err(Error::format(
                    &spec.name,
                    "declared in the metadata but missing from the file",
                ));
            };
            if info.dtype != spec.dtype.st() {
                return Err(Error::format(
                    &spec.name,
                    format!("dtype is {:?}, expected {}", info.dtype, spec.dtype.name()),
                ));
            }
            if info.shape != spec.shape {
                return Err(Error::format(
                    &spec.name,
                    format!("shape is {:?}, expected {:?}", info.shape, spec.shape),
                ));
            }
            if !declared.insert(spec.name.clone()) {
                return Err(Error::format(&spec.name, "declared by two layers"));
            }
            tensors.push((spec, info.data_offsets));
        }
        out.push(ParsedLayer {
            name,
            meta,
            act,
            tensors,
        });
    }
    let extra = st
        .tensors()
        .into_keys()
        .filter(|t| !declared.contains(t))
        .min();
    if let Some(t) = extra {
        return Err(Error::format(
            t,
            "unexpected tensor: not declared by any layer in the metadata",
        ));
    }
    Ok(Parsed {
        source_model,
        method,
        extras,
        layers: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn act_scale_survives_json_exactly() {
        // Walk f32 bit patterns across the whole positive range (normals and subnormals).
        let mut bits = 1u32;
        while bits < 0x7f80_0000 {
            let scale = f32::from_bits(bits);
            let j = serde_json::to_string(&ActMeta::from_act(ActQuant::StaticPerTensor { scale }))
                .unwrap();
            let back: ActMeta = serde_json::from_str(&j).unwrap();
            assert_eq!(
                back.to_act("l").unwrap(),
                ActQuant::StaticPerTensor { scale },
                "{j}"
            );
            bits += 0x1357;
        }
    }

    #[test]
    fn act_json_shape() {
        let j = |a| serde_json::to_string(&ActMeta::from_act(a)).unwrap();
        assert_eq!(j(ActQuant::None), r#"{"mode":"none"}"#);
        assert_eq!(
            j(ActQuant::DynamicPerToken),
            r#"{"mode":"dynamic_per_token"}"#
        );
        assert_eq!(
            j(ActQuant::StaticPerTensor { scale: 0.5 }),
            r#"{"mode":"static_per_tensor","scale":0.5}"#
        );
    }
}
