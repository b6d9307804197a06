//! The C ABI's file-opening path on arbitrary bytes: `dgq_model_open`, then every query a
//! consumer makes of each layer (info, f32 weights, bias, smoothing, the DGQ weight handle),
//! with buffers sized from what the library reports.
#![no_main]

use std::ffi::CString;
use std::ptr;

use dgq_capi::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("m.dgq.safetensors");
    std::fs::write(&path, data).expect("write the input");
    let c_path = CString::new(path.to_str().expect("utf-8 temp path")).expect("no NUL");
    let mut model = ptr::null_mut();
    // SAFETY: valid C string and out-pointer.
    let st = unsafe { dgq_model_open(c_path.as_ptr(), &mut model) };
    if st != dgq_status::DGQ_STATUS_OK {
        assert!(model.is_null(), "a failed open left a handle");
        return;
    }
    let mut n_layers = 0usize;
    // SAFETY: live model, writable out-pointer; every buffer below holds what its length says.
    unsafe {
        assert_eq!(
            dgq_model_num_layers(model, &mut n_layers),
            dgq_status::DGQ_STATUS_OK
        );
        for i in 0..n_layers {
            let mut info: dgq_layer_info = std::mem::zeroed();
            assert_eq!(
                dgq_model_layer_info(model, i, &mut info),
                dgq_status::DGQ_STATUS_OK
            );
            let mut idx = usize::MAX;
            let name = std::ffi::CStr::from_ptr(info.name);
            assert_eq!(
                dgq_model_find_layer(model, name.as_ptr(), &mut idx),
                dgq_status::DGQ_STATUS_OK
            );
            assert_eq!(idx, i);
            let dims = &info.shape[..info.ndim.min(info.shape.len())];
            let elems: usize = dims.iter().product();
            let mut buf = vec![0f32; elems];
            assert_eq!(
                dgq_model_get_f32(model, i, buf.as_mut_ptr(), buf.len()),
                dgq_status::DGQ_STATUS_OK
            );
            let (n, k) = (
                dims.first().copied().unwrap_or(0),
                dims.get(1).copied().unwrap_or(0),
            );
            let mut v = vec![0f32; n.max(k)];
            let st = dgq_model_get_bias(model, i, v.as_mut_ptr(), n);
            assert_eq!(st == dgq_status::DGQ_STATUS_OK, info.has_bias);
            let st = dgq_model_get_smooth(model, i, v.as_mut_ptr(), k);
            assert_eq!(st == dgq_status::DGQ_STATUS_OK, info.has_smooth);
            let mut w = ptr::null_mut();
            if dgq_model_get_weight(model, i, &mut w) == dgq_status::DGQ_STATUS_OK {
                let (mut wn, mut wk, mut g) = (0usize, 0usize, 0usize);
                assert_eq!(
                    dgq_weight_shape(w, &mut wn, &mut wk, &mut g),
                    dgq_status::DGQ_STATUS_OK
                );
                assert_eq!((wn, wk, g), (n, k, info.group_size));
                let mut deq = vec![0f32; wn * wk];
                assert_eq!(
                    dgq_weight_dequantize(w, deq.as_mut_ptr(), deq.len()),
                    dgq_status::DGQ_STATUS_OK
                );
                assert!(
                    deq == buf,
                    "dgq_weight_dequantize differs from dgq_model_get_f32"
                );
                dgq_weight_free(w);
            }
        }
        dgq_model_free(model);
    }
});
