//! Malformed inputs: each must be a typed error naming the tensor (or metadata key) and the
//! problem, never a panic. Files are crafted by editing a valid file and recomputing its CRCs
//! (per the spec, independently of the library) so that exactly one thing is wrong.

mod format_common;

use dgq_core::format;
use dgq_core::Error;
use format_common::*;
use safetensors::Dtype;
use serde_json::json;

/// Asserts `Error::Format` whose tensor is `tensor` and whose message mentions `needle`.
#[track_caller]
fn assert_format(r: dgq_core::Result<format::PackedModel>, tensor: &str, needle: &str) {
    match r {
        Err(e @ Error::Format { .. }) => {
            let Error::Format { tensor: t, problem } = &e else {
                unreachable!()
            };
            assert_eq!(t, tensor, "wrong tensor in: {e}");
            assert!(problem.contains(needle), "expected {needle:?} in: {e}");
            assert!(e.to_string().contains(tensor));
        }
        other => panic!("expected Format error for {tensor} ({needle}), got {other:?}"),
    }
}

/// Reads an edited file whose CRCs were all recomputed.
fn read_fixed(mut r: Raw) -> dgq_core::Result<format::PackedModel> {
    r.fix_crcs();
    format::from_bytes(&r.to_bytes())
}

fn raw() -> Raw {
    Raw::parse(&golden_bytes())
}

const DGQ_Q: &str = "blk.0.attn.qkv.qweight";

#[test]
fn unmodified_raw_edit_reads_back() {
    // Guards the helpers: re-serializing through `Raw` with fixed CRCs changes nothing.
    assert_eq!(read_fixed(raw()).unwrap(), golden_model());
}

#[test]
fn truncated_at_every_offset() {
    let b = golden_bytes();
    for len in 0..b.len() {
        assert!(
            matches!(format::from_bytes(&b[..len]), Err(Error::Format { .. })),
            "prefix {len}"
        );
        assert!(
            matches!(format::inspect_bytes(&b[..len]), Err(Error::Format { .. })),
            "prefix {len}"
        );
    }
    let mut longer = b.clone();
    longer.push(0);
    assert_format(format::from_bytes(&longer), "<header>", "safetensors");
}

#[test]
fn truncated_file_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.dgq.safetensors");
    let b = golden_bytes();
    for len in [0, 3, 8, 9, 200, data_start(&b), b.len() - 1] {
        std::fs::write(&p, &b[..len]).unwrap();
        assert!(
            matches!(format::read(&p), Err(Error::Format { .. })),
            "len {len}"
        );
        assert!(
            matches!(format::inspect(&p), Err(Error::Format { .. })),
            "len {len}"
        );
    }
    assert!(matches!(
        format::read(&dir.path().join("missing")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn absurd_header_length() {
    let b = golden_bytes();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("h.dgq.safetensors");
    for n in [
        u64::MAX,
        1 << 40,
        100_000_001,
        b.len() as u64,
        (data_start(&b) - 8 + 1) as u64,
    ] {
        let mut c = b.clone();
        c[..8].copy_from_slice(&n.to_le_bytes());
        assert_format(format::from_bytes(&c), "<header>", "");
        std::fs::write(&p, &c).unwrap();
        assert_format(format::inspect(&p).m(), "<header>", "");
    }
}

/// `inspect` results are not `PackedModel`s; adapt them to the same assertion.
trait AsModel {
    fn m(self) -> dgq_core::Result<format::PackedModel>;
}
impl AsModel for dgq_core::Result<format::FileInfo> {
    fn m(self) -> dgq_core::Result<format::PackedModel> {
        self.map(|_| format::PackedModel::default())
    }
}

#[test]
fn header_is_not_json_or_not_utf8() {
    let b = golden_bytes();
    let mut c = b.clone();
    c[8] = b'[';
    assert_format(format::from_bytes(&c), "<header>", "JSON");
    let mut c = b.clone();
    c[20] = 0xff;
    assert_format(format::from_bytes(&c), "<header>", "UTF-8");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("u.dgq.safetensors");
    std::fs::write(&p, &c).unwrap();
    assert_format(format::inspect(&p).m(), "<header>", "UTF-8");
}

#[test]
fn plain_safetensors_file_is_not_a_packed_file() {
    let mut r = raw();
    r.meta.clear();
    let b = r.to_bytes();
    assert_format(format::from_bytes(&b), "__metadata__.format", "missing");
    let v = safetensors::tensor::TensorView::new(Dtype::F32, vec![1], &[0u8; 4]).unwrap();
    let b = safetensors::serialize([("w", v)], None).unwrap();
    assert_format(format::from_bytes(&b), "__metadata__", "missing");
}

#[test]
fn unknown_format_name() {
    let mut r = raw();
    r.meta.insert("format".into(), "gguf".into());
    assert_format(read_fixed(r), "__metadata__.format", "\"gguf\"");
    let mut r = raw();
    r.meta.remove("format");
    assert_format(read_fixed(r), "__metadata__.format", "missing");
}

#[test]
fn unknown_version() {
    for v in ["2", "0", "1.0", "", "v1"] {
        let mut r = raw();
        r.meta.insert("format_version".into(), v.into());
        match read_fixed(r.clone()) {
            Err(Error::UnsupportedVersion {
                found,
                supported: 1,
            }) => assert_eq!(found, v),
            other => panic!("{v}: {other:?}"),
        }
        // The version is judged before the CRC, whose definition a newer version may change.
        r.meta.insert("metadata_crc32".into(), "00000000".into());
        assert!(matches!(
            format::from_bytes(&r.to_bytes()),
            Err(Error::UnsupportedVersion { .. })
        ));
        assert!(matches!(
            format::inspect_bytes(&r.to_bytes()),
            Err(Error::UnsupportedVersion { .. })
        ));
    }
}

#[test]
fn metadata_crc() {
    let mut r = raw();
    r.meta.insert("source_model".into(), "tampered".into());
    assert_format(
        format::from_bytes(&r.to_bytes()),
        "__metadata__",
        "CRC-32 mismatch",
    );
    assert_format(
        format::inspect_bytes(&r.to_bytes()).m(),
        "__metadata__",
        "CRC-32 mismatch",
    );
    for bad in ["", "707D8936", "0x707d89", "707d89360"] {
        let mut r = raw();
        r.meta.insert("metadata_crc32".into(), bad.into());
        assert_format(
            format::from_bytes(&r.to_bytes()),
            "__metadata__.metadata_crc32",
            "hex",
        );
    }
    let mut r = raw();
    r.meta.remove("metadata_crc32");
    assert_format(
        format::from_bytes(&r.to_bytes()),
        "__metadata__.metadata_crc32",
        "missing",
    );
}

#[test]
fn missing_reserved_keys() {
    for key in ["source_model", "method", "layers"] {
        let mut r = raw();
        r.meta.remove(key);
        r.fix_meta_crc();
        assert_format(
            format::from_bytes(&r.to_bytes()),
            &format!("__metadata__.{key}"),
            "missing",
        );
    }
}

/// An edit of one layer's JSON entry.
type Edit = Box<dyn Fn(&mut serde_json::Value)>;

#[test]
fn layer_json_errors() {
    let mut r = raw();
    r.meta.insert("layers".into(), "{not json".into());
    r.fix_meta_crc();
    assert_format(
        format::from_bytes(&r.to_bytes()),
        "__metadata__.layers",
        "invalid layer JSON",
    );
    let cases: Vec<(&str, Edit, &str, &str)> = vec![
        (
            GOLDEN_DGQ,
            Box::new(|l| l["extra_field"] = json!(1)),
            "__metadata__.layers",
            "unknown field",
        ),
        (
            GOLDEN_DGQ,
            Box::new(|l| l["scheme"] = json!("dgq_w3")),
            "__metadata__.layers",
            "unknown variant",
        ),
        (
            GOLDEN_DGQ,
            Box::new(|l| l["shape"] = json!([4, -16])),
            "__metadata__.layers",
            "invalid",
        ),
        (
            GOLDEN_DGQ,
            Box::new(|l| l["act"] = json!({"mode": "per_channel"})),
            "__metadata__.layers",
            "unknown variant",
        ),
        (
            GOLDEN_DGQ,
            Box::new(|l| l["group_size"] = json!(3)),
            GOLDEN_DGQ,
            "group size 3",
        ),
        (
            GOLDEN_DGQ,
            Box::new(|l| l["group_size"] = json!(0)),
            GOLDEN_DGQ,
            "group size 0",
        ),
        (
            GOLDEN_DGQ,
            Box::new(|l| l["group_size"] = json!(1)),
            GOLDEN_DGQ,
            "even",
        ),
        (
            GOLDEN_DGQ,
            Box::new(|l| {
                l.as_object_mut()
                    .unwrap()
                    .remove("group_size")
                    .map(|_| ())
                    .unwrap()
            }),
            GOLDEN_DGQ,
            "lacks group_size",
        ),
        (
            GOLDEN_NORM,
            Box::new(|l| l["group_size"] = json!(8)),
            GOLDEN_NORM,
            "must not have group_size",
        ),
        (
            GOLDEN_DGQ,
            Box::new(|l| l["shape"] = json!([4, 16, 1])),
            GOLDEN_DGQ,
            "2-D",
        ),
        (
            GOLDEN_DGQ,
            Box::new(|l| l["shape"] = json!([0, 16])),
            GOLDEN_DGQ,
            "zero dimension",
        ),
        (
            GOLDEN_INT8,
            Box::new(|l| l["act"] = json!({"mode": "static_per_tensor"})),
            GOLDEN_INT8,
            "lacks its scale",
        ),
        (
            GOLDEN_INT8,
            Box::new(|l| l["act"]["scale"] = json!(0.0)),
            GOLDEN_INT8,
            "finite f32 > 0",
        ),
        (
            GOLDEN_INT8,
            Box::new(|l| l["act"]["scale"] = json!(-0.5)),
            GOLDEN_INT8,
            "finite f32 > 0",
        ),
        (
            GOLDEN_INT8,
            Box::new(|l| l["act"]["scale"] = json!(1e300)),
            GOLDEN_INT8,
            "finite f32 > 0",
        ),
        (
            GOLDEN_INT8,
            Box::new(|l| l["act"]["scale"] = json!(1e-300)),
            GOLDEN_INT8,
            "finite f32 > 0",
        ),
        (
            GOLDEN_DGQ,
            Box::new(|l| l["act"] = json!({"mode": "none", "scale": 1.0})),
            GOLDEN_DGQ,
            "without one",
        ),
        (
            GOLDEN_NORM,
            Box::new(|l| l["act"] = json!({"mode": "dynamic_per_token"})),
            GOLDEN_NORM,
            "2-D",
        ),
        (
            GOLDEN_DGQ,
            Box::new(|l| l["tensors"]["scales"] = json!("00000000")),
            "blk.0.attn.qkv.scales",
            "not allowed",
        ),
        (
            GOLDEN_NORM,
            Box::new(|l| l["tensors"]["bias"] = json!("00000000")),
            "blk.0.norm.bias",
            "not allowed",
        ),
        (
            GOLDEN_DGQ,
            Box::new(|l| l["tensors"]["mystery"] = json!("00000000")),
            "blk.0.attn.qkv.mystery",
            "not allowed",
        ),
        (
            GOLDEN_DGQ,
            Box::new(|l| l["tensors"]["s2"] = json!("xyz")),
            "blk.0.attn.qkv.s2",
            "hex",
        ),
        (
            GOLDEN_DGQ,
            Box::new(|l| {
                l["tensors"]
                    .as_object_mut()
                    .unwrap()
                    .remove("s2")
                    .map(|_| ())
                    .unwrap()
            }),
            "blk.0.attn.qkv.s2",
            "not declared",
        ),
    ];
    for (layer, edit, tensor, needle) in cases {
        let mut r = raw();
        r.edit_layer(layer, |l| edit(l));
        r.fix_meta_crc();
        assert_format(format::from_bytes(&r.to_bytes()), tensor, needle);
    }
}

#[test]
fn bad_layer_name_in_file() {
    let mut r = raw();
    let mut l = r.layers();
    let entry = l.as_object_mut().unwrap().remove(GOLDEN_NORM).unwrap();
    l["bad\u{7}name"] = entry;
    r.set_layers(&l);
    let (d, s, b) = r.tensors.remove("blk.0.norm.weight").unwrap();
    r.tensors.insert("bad\u{7}name.weight".into(), (d, s, b));
    r.fix_meta_crc();
    assert_format(
        format::from_bytes(&r.to_bytes()),
        "bad\\u{7}name",
        "control character",
    );
}

#[test]
fn wrong_dtype() {
    let mut r = raw();
    r.tensors.get_mut("blk.0.attn.qkv.zeros").unwrap().0 = Dtype::U8;
    assert_format(
        read_fixed(r),
        "blk.0.attn.qkv.zeros",
        "dtype is U8, expected I8",
    );
    let mut r = raw();
    let t = r.tensors.get_mut("blk.0.norm.weight").unwrap();
    t.0 = Dtype::I32;
    assert_format(read_fixed(r), "blk.0.norm.weight", "expected F32");
    let mut r = raw();
    let t = r.tensors.get_mut("embed.weight").unwrap();
    t.0 = Dtype::BF16;
    assert_format(read_fixed(r), "embed.weight", "expected F16");
}

#[test]
fn wrong_shape() {
    // Same byte count, different shape.
    let mut r = raw();
    r.tensors.get_mut("blk.0.attn.qkv.s1").unwrap().1 = vec![2, 2];
    assert_format(
        read_fixed(r),
        "blk.0.attn.qkv.s1",
        "shape is [2, 2], expected [4]",
    );
    let mut r = raw();
    r.tensors.get_mut(DGQ_Q).unwrap().1 = vec![8, 4];
    assert_format(read_fixed(r), DGQ_Q, "expected [4, 8]");
    // The declared logical shape disagrees with the tensors.
    let mut r = raw();
    r.edit_layer(GOLDEN_DGQ, |l| l["shape"] = json!([4, 32]));
    assert_format(read_fixed(r), DGQ_Q, "shape is [4, 8], expected [4, 16]");
    let mut r = raw();
    r.edit_layer(GOLDEN_INT8, |l| l["shape"] = json!([2, 16]));
    r.edit_layer(GOLDEN_INT8, |l| l["group_size"] = json!(16));
    assert_format(read_fixed(r), "blk.0.mlp.down.qweight", "expected [2, 16]");
    // Shape and byte count inconsistent: the safetensors layer rejects it.
    let mut r = raw();
    r.tensors.get_mut("blk.0.norm.weight").unwrap().1 = vec![17];
    let b = r.to_bytes_unchecked();
    assert!(matches!(format::from_bytes(&b), Err(Error::Format { .. })));
}

impl Raw {
    /// Serializes even when a tensor's shape disagrees with its bytes (hand-built header).
    fn to_bytes_unchecked(&self) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), json!(self.meta));
        let mut data = Vec::new();
        for (name, (d, s, b)) in &self.tensors {
            let dt = serde_json::to_value(d).unwrap();
            header.insert(name.clone(), json!({"dtype": dt, "shape": s, "data_offsets": [data.len(), data.len() + b.len()]}));
            data.extend_from_slice(b);
        }
        let h = serde_json::Value::Object(header).to_string();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h.into_bytes());
        out.extend(data);
        out
    }
}

#[test]
fn missing_tensor() {
    for t in [
        "blk.0.attn.qkv.s1",
        "blk.0.mlp.up.smooth",
        "blk.0.attn.qkv.bias",
        "embed.weight",
    ] {
        let mut r = raw();
        r.tensors.remove(t);
        assert_format(read_fixed(r), t, "missing from the file");
    }
}

#[test]
fn extra_tensor() {
    let mut r = raw();
    r.tensors
        .insert("stray.weight".into(), (Dtype::F32, vec![1], vec![0; 4]));
    assert_format(read_fixed(r.clone()), "stray.weight", "unexpected tensor");
    r.fix_crcs();
    assert_format(
        format::inspect_bytes(&r.to_bytes()).m(),
        "stray.weight",
        "unexpected tensor",
    );
    // A tensor that looks like a role of a real layer but is not declared.
    let mut r = raw();
    r.tensors.insert(
        "blk.0.norm.bias".into(),
        (Dtype::F32, vec![16], vec![0; 64]),
    );
    assert_format(read_fixed(r), "blk.0.norm.bias", "unexpected tensor");
}

/// Sets q[row, col] of the golden DGQ layer in the packed bytes.
fn set_q(r: &mut Raw, row: usize, col: usize, v: u8) {
    let b = &mut r.data_mut(DGQ_Q)[row * 8 + col / 2];
    *b = if col % 2 == 0 {
        (*b & 0xf0) | v
    } else {
        (*b & 0x0f) | (v << 4)
    };
}

#[test]
fn s2_zero() {
    let mut r = raw();
    r.data_mut("blk.0.attn.qkv.s2")[3] = 0;
    assert_format(
        read_fixed(r),
        "blk.0.attn.qkv.s2",
        "s2[1, 1] = 0 must be >= 1",
    );
    let mut r = raw();
    r.data_mut("blk.0.attn.qkv.s2")[0] = (-5i8) as u8;
    assert_format(read_fixed(r), "blk.0.attn.qkv.s2", "s2[0, 0] = -5");
}

#[test]
fn zero_point_out_of_range() {
    let mut r = raw();
    r.data_mut("blk.0.attn.qkv.zeros")[5] = 16;
    assert_format(
        read_fixed(r),
        "blk.0.attn.qkv.zeros",
        "zeros[2, 1] = 16 must be in [0, 15]",
    );
    let mut r = raw();
    r.data_mut("blk.0.attn.qkv.zeros")[0] = 0xff;
    assert_format(read_fixed(r), "blk.0.attn.qkv.zeros", "zeros[0, 0] = -1");
}

#[test]
fn overflow_combination() {
    // z = 0, S2 = 127 allows only q ∈ [0, 1]; q = 2 gives S2·(q − z) = 254.
    let mut r = raw();
    r.data_mut("blk.0.attn.qkv.zeros")[2] = 0;
    r.data_mut("blk.0.attn.qkv.s2")[2] = 127;
    for c in 0..8 {
        set_q(&mut r, 1, c, 1);
    }
    assert!(read_fixed(r.clone()).is_ok(), "the edit itself is valid");
    set_q(&mut r, 1, 5, 2);
    assert_format(read_fixed(r), DGQ_Q, "S2·(q − z) = 254 at [1, 5] overflows");
    // z = 15, S2 = 9 allows q ∈ [1, 15]; q = 0 gives −135.
    let mut r = raw();
    r.data_mut("blk.0.attn.qkv.zeros")[7] = 15;
    r.data_mut("blk.0.attn.qkv.s2")[7] = 9;
    for c in 8..16 {
        set_q(&mut r, 3, c, 15);
    }
    set_q(&mut r, 3, 12, 0);
    assert_format(read_fixed(r), DGQ_Q, "S2·(q − z) = -135 at [3, 12]");
}

#[test]
fn sym_codes_out_of_range() {
    // int4 nibble 0x8 is −8, outside [−7, 7].
    let mut r = raw();
    r.data_mut("blk.0.mlp.up.qweight")[9] = 0x81;
    assert_format(
        read_fixed(r),
        "blk.0.mlp.up.qweight",
        "q[1, 3] = -8 outside [-7, 7]",
    );
    let mut r = raw();
    r.data_mut("blk.0.mlp.down.qweight")[10] = 0x80;
    assert_format(
        read_fixed(r),
        "blk.0.mlp.down.qweight",
        "q[1, 2] = -128 outside [-127, 127]",
    );
}

#[test]
fn non_finite_or_non_positive_scales() {
    let f16_bytes = |v: f32| half::f16::from_f32(v).to_le_bytes();
    for (tensor, idx, v, needle) in [
        ("blk.0.attn.qkv.s1", 1, f32::INFINITY, "s1[1] = inf"),
        ("blk.0.attn.qkv.s1", 0, 0.0, "s1[0] = 0"),
        ("blk.0.attn.qkv.s1", 3, -1.0, "s1[3] = -1"),
        ("blk.0.mlp.up.scales", 5, f32::NAN, "scales[2, 1] = NaN"),
        ("blk.0.mlp.down.scales", 0, -0.0, "scales[0, 0] = -0"),
    ] {
        let mut r = raw();
        r.data_mut(tensor)[2 * idx..2 * idx + 2].copy_from_slice(&f16_bytes(v));
        assert_format(read_fixed(r), tensor, needle);
    }
    let mut r = raw();
    r.data_mut("blk.0.mlp.up.smooth")[4..8].copy_from_slice(&0f32.to_le_bytes());
    assert_format(
        read_fixed(r),
        "blk.0.mlp.up.smooth",
        "smooth[1] = 0 must be finite and > 0",
    );
    let mut r = raw();
    r.data_mut("blk.0.attn.qkv.bias")[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_format(read_fixed(r), "blk.0.attn.qkv.bias", "bias[0] = NaN");
    let mut r = raw();
    r.data_mut("blk.0.norm.weight")[8..12].copy_from_slice(&f32::NEG_INFINITY.to_le_bytes());
    assert_format(read_fixed(r), "blk.0.norm.weight", "at [2] is not finite");
    let mut r = raw();
    r.data_mut("embed.weight")[2..4].copy_from_slice(&f16_bytes(f32::NAN));
    assert_format(read_fixed(r), "embed.weight", "at [0, 1] is not finite");
    let mut r = raw();
    r.data_mut("blk.0.gate_scale.weight")[0..2]
        .copy_from_slice(&half::bf16::INFINITY.to_le_bytes());
    assert_format(read_fixed(r), "blk.0.gate_scale.weight", "not finite");
}

#[test]
fn every_bit_flip_in_the_data_is_a_crc_error_naming_its_tensor() {
    let b = golden_bytes();
    let ds = data_start(&b);
    let st = safetensors::SafeTensors::deserialize(&b).unwrap();
    let owner = |pos: usize| {
        st.tensors()
            .into_iter()
            .find(|(_, v)| {
                let s = v.data().as_ptr() as usize - b.as_ptr() as usize;
                (s..s + v.data().len()).contains(&pos)
            })
            .map(|(n, _)| n)
            .unwrap()
    };
    for pos in ds..b.len() {
        let name = owner(pos);
        for bit in 0..8 {
            let mut c = b.clone();
            c[pos] ^= 1 << bit;
            assert_format(format::from_bytes(&c), &name, "CRC-32 mismatch");
        }
    }
}

#[test]
fn every_bit_flip_in_the_header_is_an_error() {
    let b = golden_bytes();
    for pos in 0..data_start(&b) {
        for bit in 0..8 {
            let mut c = b.clone();
            c[pos] ^= 1 << bit;
            match format::from_bytes(&c) {
                Err(Error::Format { .. } | Error::UnsupportedVersion { .. }) => {}
                other => panic!("flip of bit {bit} at byte {pos}: {other:?}"),
            }
        }
    }
}

#[test]
fn first_error_in_name_order_is_reported() {
    // Layers are decoded in parallel; with two corrupt layers the error must still be the
    // first in name order, every time.
    let mut r = raw();
    r.data_mut("blk.0.mlp.up.scales")[0..2].copy_from_slice(&half::f16::NAN.to_le_bytes());
    r.data_mut("embed.weight")[0..2].copy_from_slice(&half::f16::NAN.to_le_bytes());
    r.data_mut("blk.0.attn.qkv.s2")[0] = 0;
    r.fix_crcs();
    let b = r.to_bytes();
    for _ in 0..20 {
        assert_format(format::from_bytes(&b), "blk.0.attn.qkv.s2", "must be >= 1");
    }
}

#[test]
fn unaligned_layout_from_another_writer_reads() {
    // Tensors in name order and an unpadded header: data offsets are not multiples of the
    // element sizes, which a conforming reader must accept.
    let mut r = raw();
    let mut b = r.to_bytes_unchecked();
    let mut pad = String::new();
    while data_start(&b) % 2 == 0 {
        pad.push('x');
        r.meta.insert("pad".into(), pad.clone());
        r.fix_crcs();
        b = r.to_bytes_unchecked();
    }
    let mut want = golden_model();
    want.metadata.insert("pad".into(), pad);
    assert_eq!(format::from_bytes(&b).unwrap(), want);
}
