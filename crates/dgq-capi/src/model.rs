//! Packed models (the `.dgq.safetensors` format, docs/FORMAT.md): open, list, extract, build,
//! save.

use std::ffi::{c_char, CString};

use ndarray::Array1;

use dgq_core::format::{self, LayerWeight, PackedLayer, PackedModel, Scheme};

use crate::act::{act_from_c, act_to_c, dgq_act_mode};
use crate::args;
use crate::status::{dgq_status, guard, CResult, Failure};
use crate::weight::dgq_weight;
use crate::DGQ_MAX_DIMS;

/// A packed model held in memory (opaque): the layers of one packed file, or layers being
/// collected for saving. Created by `dgq_model_open` or `dgq_model_create`, freed by
/// `dgq_model_free`.
pub struct dgq_model {
    model: PackedModel,
    /// Layer names in index order (the model's name order), NUL-terminated for C.
    names: Vec<CString>,
}

impl dgq_model {
    fn new(model: PackedModel) -> CResult<Self> {
        let names = model
            .layers
            .keys()
            .map(|k| {
                CString::new(k.as_str()).map_err(|_| {
                    // The format rejects control characters in names, NUL included.
                    Failure::new(
                        dgq_status::DGQ_STATUS_FORMAT,
                        format!("layer name {k:?} contains a NUL byte"),
                    )
                })
            })
            .collect::<CResult<_>>()?;
        Ok(dgq_model { model, names })
    }

    fn layer(&self, index: usize) -> CResult<(&CString, &PackedLayer)> {
        let name = self.names.get(index).ok_or_else(|| {
            Failure::invalid(format!(
                "layer index {index} is out of range (the model has {} layers)",
                self.names.len()
            ))
        })?;
        let key = name.to_str().map_err(|e| Failure::invalid(e.to_string()))?;
        let layer = self.model.layers.get(key).ok_or_else(|| {
            Failure::new(dgq_status::DGQ_STATUS_INTERNAL, "layer name cache is stale")
        })?;
        Ok((name, layer))
    }
}

/// Storage scheme of a layer (values of `dgq_layer_info.scheme`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dgq_scheme {
    /// DGQ W4: u4 codes, u4 zero points, INT8 group scales, FP16 channel scales.
    DGQ_SCHEME_DGQ_W4 = 0,
    /// Symmetric int4 with FP16 group scales.
    DGQ_SCHEME_SYM_INT4 = 1,
    /// Symmetric int8 with FP16 group scales.
    DGQ_SCHEME_SYM_INT8 = 2,
    /// Plain f32 tensor.
    DGQ_SCHEME_F32 = 3,
    /// Plain IEEE half tensor.
    DGQ_SCHEME_F16 = 4,
    /// Plain bfloat16 tensor.
    DGQ_SCHEME_BF16 = 5,
}

fn scheme_to_c(s: Scheme) -> dgq_scheme {
    match s {
        Scheme::DgqW4 => dgq_scheme::DGQ_SCHEME_DGQ_W4,
        Scheme::SymInt4 => dgq_scheme::DGQ_SCHEME_SYM_INT4,
        Scheme::SymInt8 => dgq_scheme::DGQ_SCHEME_SYM_INT8,
        Scheme::F32 => dgq_scheme::DGQ_SCHEME_F32,
        Scheme::F16 => dgq_scheme::DGQ_SCHEME_F16,
        Scheme::Bf16 => dgq_scheme::DGQ_SCHEME_BF16,
    }
}

/// One layer of a model, as `dgq_model_layer_info` reports it.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dgq_layer_info {
    /// Layer name, NUL-terminated UTF-8, owned by the model: valid until the model is freed or
    /// a layer is added to it.
    pub name: *const c_char,
    /// A `dgq_scheme` value.
    pub scheme: i32,
    /// Bits per stored weight element: 4, 8, 16 or 32.
    pub bits: u32,
    /// Rank of the weight (2 for quantized layers: `[N, K]`).
    pub ndim: usize,
    /// Extents; entries past `min(ndim, DGQ_MAX_DIMS)` are 0.
    pub shape: [usize; DGQ_MAX_DIMS],
    /// Group size along K for quantized schemes, 0 for float tensors.
    pub group_size: usize,
    /// A `dgq_act_mode` value: how the layer's input is quantized.
    pub act_mode: i32,
    /// The static activation scale when `act_mode == DGQ_ACT_STATIC`, else 0.
    pub act_scale: f32,
    /// Whether a bias `[N]` is stored (`dgq_model_get_bias`).
    pub has_bias: bool,
    /// Whether an input smoothing divisor `[K]` is stored (`dgq_model_get_smooth`).
    pub has_smooth: bool,
}

/// Options of `dgq_model_add_layer`. Start from `dgq_layer_options_default()`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dgq_layer_options {
    /// A `dgq_act_mode` value. Default: `DGQ_ACT_PER_TOKEN`.
    pub act_mode: i32,
    /// Static activation scale (finite, > 0) when `act_mode == DGQ_ACT_STATIC`. Default: 0.
    pub act_scale: f32,
    /// Bias `[N]`, or NULL (default).
    pub bias: *const f32,
    /// Elements of `bias`: N, or 0 with `bias = NULL`.
    pub bias_len: usize,
    /// Input smoothing divisor `[K]` (finite, > 0), or NULL (default).
    pub smooth: *const f32,
    /// Elements of `smooth`: K, or 0 with `smooth = NULL`.
    pub smooth_len: usize,
}

/// Default layer options: dynamic per-token INT8 activations, no bias, no smoothing.
#[no_mangle]
pub extern "C" fn dgq_layer_options_default() -> dgq_layer_options {
    dgq_layer_options {
        act_mode: dgq_act_mode::DGQ_ACT_PER_TOKEN as i32,
        act_scale: 0.0,
        bias: std::ptr::null(),
        bias_len: 0,
        smooth: std::ptr::null(),
        smooth_len: 0,
    }
}

/// Creates an empty model to which layers can be added and which can be saved.
/// `source_model` and `method` are free-text provenance stored in the file (NULL means empty).
/// On failure `*out` is set to NULL.
///
/// # Safety
/// Strings must be NULL or NUL-terminated; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn dgq_model_create(
    source_model: *const c_char,
    method: *const c_char,
    out: *mut *mut dgq_model,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let mut out = unsafe { args::out_ptr("out", out)? };
        out.set(std::ptr::null_mut());
        let opt = |p: *const c_char, what| -> CResult<String> {
            if p.is_null() {
                Ok(String::new())
            } else {
                // SAFETY: caller's contract.
                Ok(unsafe { args::c_str(what, p)? }.to_string())
            }
        };
        let m = PackedModel::new(opt(source_model, "source_model")?, opt(method, "method")?);
        out.set(args::into_handle(dgq_model::new(m)?));
        Ok(())
    })
}

/// Reads a packed file and validates all of it: container, format name and version, CRCs of
/// the metadata and of every tensor, shapes and value invariants. The whole file is loaded into
/// memory. Errors: `DGQ_STATUS_IO` (cannot read), `DGQ_STATUS_FORMAT` (malformed, truncated or
/// corrupted; the message names the tensor), `DGQ_STATUS_UNSUPPORTED_VERSION`. On failure `*out`
/// is set to NULL. Opening the same path several times gives independent handles.
///
/// # Safety
/// `path` must be NUL-terminated; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn dgq_model_open(
    path: *const c_char,
    out: *mut *mut dgq_model,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let mut out = unsafe { args::out_ptr("out", out)? };
        out.set(std::ptr::null_mut());
        let path = unsafe { args::c_path("path", path)? };
        let m = format::read(path)?;
        out.set(args::into_handle(dgq_model::new(m)?));
        Ok(())
    })
}

/// Writes the model to `path` atomically (temporary file in the same directory, fsync, rename):
/// on failure `path` is left as it was. Every layer is validated first.
///
/// # Safety
/// `model` must be a live model, `path` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dgq_model_save(
    model: *const dgq_model,
    path: *const c_char,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let m = unsafe { args::handle("model", model)? };
        let path = unsafe { args::c_path("path", path)? };
        format::write(path, &m.model)?;
        Ok(())
    })
}

/// Frees a model (and the layer names it lent out); NULL is a no-op.
///
/// # Safety
/// `model` must be NULL or a model not freed before.
#[no_mangle]
pub unsafe extern "C" fn dgq_model_free(model: *mut dgq_model) {
    // SAFETY: caller's contract.
    crate::status::guard_value((), || unsafe { args::free_handle(model) })
}

/// Number of layers; layer indices run from 0 to this minus 1, in name order.
///
/// # Safety
/// `model` must be a live model, `out` writable.
#[no_mangle]
pub unsafe extern "C" fn dgq_model_num_layers(
    model: *const dgq_model,
    out: *mut usize,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let m = unsafe { args::handle("model", model)? };
        unsafe { args::out_ptr("out", out)? }.set(m.names.len());
        Ok(())
    })
}

/// Describes layer `index` (name, scheme, shape, group size, activation mode, bias/smoothing).
///
/// # Safety
/// `model` must be a live model, `out` writable.
#[no_mangle]
pub unsafe extern "C" fn dgq_model_layer_info(
    model: *const dgq_model,
    index: usize,
    out: *mut dgq_layer_info,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let m = unsafe { args::handle("model", model)? };
        let mut out = unsafe { args::out_ptr("out", out)? };
        let (name, l) = m.layer(index)?;
        let shape_v = l.weight.shape();
        let mut shape = [0usize; DGQ_MAX_DIMS];
        for (s, v) in shape.iter_mut().zip(shape_v.iter()) {
            *s = *v;
        }
        let scheme = l.weight.scheme();
        let (act_mode, act_scale) = act_to_c(&l.act);
        out.set(dgq_layer_info {
            name: name.as_ptr(),
            scheme: scheme_to_c(scheme) as i32,
            bits: scheme.weight_bits(),
            ndim: shape_v.len(),
            shape,
            group_size: l.weight.group_size().unwrap_or(0),
            act_mode,
            act_scale,
            has_bias: l.bias.is_some(),
            has_smooth: l.smooth.is_some(),
        });
        Ok(())
    })
}

/// Finds a layer by name: `DGQ_STATUS_NOT_FOUND` if there is none.
///
/// # Safety
/// `model` must be a live model, `name` NUL-terminated, `index` writable.
#[no_mangle]
pub unsafe extern "C" fn dgq_model_find_layer(
    model: *const dgq_model,
    name: *const c_char,
    index: *mut usize,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let m = unsafe { args::handle("model", model)? };
        let name = unsafe { args::c_str("name", name)? };
        let mut index = unsafe { args::out_ptr("index", index)? };
        let i = m
            .names
            .binary_search_by(|n| n.as_bytes().cmp(name.as_bytes()))
            .map_err(|_| {
                Failure::new(
                    dgq_status::DGQ_STATUS_NOT_FOUND,
                    format!("no layer named {name:?}"),
                )
            })?;
        index.set(i);
        Ok(())
    })
}

/// Copies layer `index`'s DGQ weight into a new weight handle (independent of the model; free
/// with `dgq_weight_free`). `DGQ_STATUS_UNSUPPORTED` if the layer is not `DGQ_SCHEME_DGQ_W4`.
/// On failure `*out` is set to NULL.
///
/// # Safety
/// `model` must be a live model, `out` writable.
#[no_mangle]
pub unsafe extern "C" fn dgq_model_get_weight(
    model: *const dgq_model,
    index: usize,
    out: *mut *mut dgq_weight,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let mut out = unsafe { args::out_ptr("out", out)? };
        out.set(std::ptr::null_mut());
        let m = unsafe { args::handle("model", model)? };
        let (name, l) = m.layer(index)?;
        match &l.weight {
            LayerWeight::Dgq(w) => {
                out.set(args::into_handle(dgq_weight::new(w.clone())));
                Ok(())
            }
            other => Err(Failure::new(
                dgq_status::DGQ_STATUS_UNSUPPORTED,
                format!(
                    "layer {name:?} has scheme {}, not dgq_w4 (use dgq_model_get_f32)",
                    other.scheme()
                ),
            )),
        }
    })
}

/// Writes layer `index`'s weight as f32, row-major over its shape (dequantized for quantized
/// schemes). `out_len` is the capacity of `out` (at least the product of the shape).
///
/// # Safety
/// `model` must be a live model, `out` hold `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn dgq_model_get_f32(
    model: *const dgq_model,
    index: usize,
    out: *mut f32,
    out_len: usize,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let m = unsafe { args::handle("model", model)? };
        let (_, l) = m.layer(index)?;
        let need = l
            .weight
            .shape()
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Failure::invalid("layer size overflows size_t"))?;
        let out = unsafe { args::out_slice("out", out, out_len, need)? };
        let v = l.weight.to_f32();
        for (o, x) in out.iter_mut().zip(v.iter()) {
            *o = *x;
        }
        Ok(())
    })
}

fn copy_vector(
    name: &CString,
    what: &str,
    v: Option<&Array1<f32>>,
    out: *mut f32,
    out_len: usize,
) -> CResult<()> {
    let v = v.ok_or_else(|| {
        Failure::new(
            dgq_status::DGQ_STATUS_NOT_FOUND,
            format!("layer {name:?} has no {what}"),
        )
    })?;
    // SAFETY: forwarded caller's contract.
    let out = unsafe { args::out_slice(what, out, out_len, v.len())? };
    for (o, x) in out.iter_mut().zip(v.iter()) {
        *o = *x;
    }
    Ok(())
}

/// Writes layer `index`'s bias `[N]`; `DGQ_STATUS_NOT_FOUND` if it has none. `out_len` is the
/// capacity of `out` (at least N).
///
/// # Safety
/// `model` must be a live model, `out` hold `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn dgq_model_get_bias(
    model: *const dgq_model,
    index: usize,
    out: *mut f32,
    out_len: usize,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let m = unsafe { args::handle("model", model)? };
        let (name, l) = m.layer(index)?;
        copy_vector(name, "bias", l.bias.as_ref(), out, out_len)
    })
}

/// Writes layer `index`'s input smoothing divisor `[K]` (the runtime divides X by it before
/// quantizing); `DGQ_STATUS_NOT_FOUND` if it has none. `out_len` is the capacity (at least K).
///
/// # Safety
/// `model` must be a live model, `out` hold `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn dgq_model_get_smooth(
    model: *const dgq_model,
    index: usize,
    out: *mut f32,
    out_len: usize,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let m = unsafe { args::handle("model", model)? };
        let (name, l) = m.layer(index)?;
        copy_vector(name, "smooth", l.smooth.as_ref(), out, out_len)
    })
}

/// Adds a copy of `w` to `model` as layer `name`, with `opts` (NULL: `dgq_layer_options_default()`).
/// The layer is validated (name, weight invariants, bias `[N]`, smoothing `[K]` finite and > 0,
/// static scale finite and > 0). `DGQ_STATUS_INVALID_ARGUMENT` if the name is taken. Names
/// previously returned by `dgq_model_layer_info` become invalid, and indices may shift (layers
/// are kept in name order).
///
/// # Safety
/// `model` must be a live model not used by another thread, `name` NUL-terminated, `w` a live
/// weight, `opts` NULL or readable with arrays of the stated lengths.
#[no_mangle]
pub unsafe extern "C" fn dgq_model_add_layer(
    model: *mut dgq_model,
    name: *const c_char,
    w: *const dgq_weight,
    opts: *const dgq_layer_options,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let m = unsafe { args::handle_mut("model", model)? };
        let name = unsafe { args::c_str("name", name)? };
        let w = unsafe { args::handle("w", w)? };
        let o = if opts.is_null() {
            dgq_layer_options_default()
        } else {
            *unsafe { args::handle("opts", opts)? }
        };
        if m.model.layers.contains_key(name) {
            return Err(Failure::invalid(format!(
                "the model already has a layer named {name:?}"
            )));
        }
        let bias = unsafe { args::opt_slice("opts.bias", o.bias, o.bias_len)? };
        let smooth = unsafe { args::opt_slice("opts.smooth", o.smooth, o.smooth_len)? };
        for (what, v, want) in [("bias", bias, w.w.n()), ("smooth", smooth, w.w.k())] {
            if let Some(v) = v {
                if v.len() != want {
                    return Err(Failure::shape(format!(
                        "opts.{what} has {} elements, needs {want}",
                        v.len()
                    )));
                }
            }
        }
        let mut layer = PackedLayer::new(LayerWeight::Dgq(w.w.clone()))
            .with_act(act_from_c(o.act_mode, o.act_scale)?);
        if let Some(b) = bias {
            layer = layer.with_bias(Array1::from(b.to_vec()));
        }
        if let Some(s) = smooth {
            layer = layer.with_smooth(Array1::from(s.to_vec()));
        }
        // Validate the layer alone (a one-layer model), not the whole model again.
        let mut one = PackedModel::new("", "");
        one.layers.insert(name.to_string(), layer);
        // The weight was valid already, so what fails here is the name or an option.
        one.validate().map_err(|e| match e {
            dgq_core::Error::Invariant { tensor, problem } => {
                Failure::invalid(format!("layer {name:?} rejected: {tensor}: {problem}"))
            }
            e => e.into(),
        })?;
        let cname = CString::new(name).map_err(|_| Failure::invalid("name contains a NUL byte"))?;
        let (key, layer) = one
            .layers
            .into_iter()
            .next()
            .ok_or_else(|| Failure::new(dgq_status::DGQ_STATUS_INTERNAL, "layer vanished"))?;
        let pos = m.names.partition_point(|n| n.as_bytes() < key.as_bytes());
        m.model.layers.insert(key, layer);
        m.names.insert(pos, cname);
        Ok(())
    })
}
