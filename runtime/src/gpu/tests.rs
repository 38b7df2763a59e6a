//! Unit tests of the device layer: uploads and downloads of every dtype, pipelines and dispatches on the
//! test device (lavapipe in CI).

use super::*;
use crate::{DType, Tensor};
use std::sync::OnceLock;

/// The device every test shares (`exec`'s too). No adapter is a failure with `Gpu::new`'s message, never a
/// skip.
pub(crate) fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    match GPU.get_or_init(|| Gpu::new(&GpuOptions::default()).map_err(|e| e.to_string())) {
        Ok(gpu) => gpu,
        Err(message) => panic!("{message}"),
    }
}

fn kernel(name: &str, body: &str) -> KernelSource {
    let wgsl = format!(
        "@group(0) @binding(0) var<storage, read> a: array<f32>;\n\
         @group(0) @binding(1) var<storage, read> b: array<f32>;\n\
         @group(0) @binding(2) var<storage, read_write> out: array<f32>;\n\
         @compute @workgroup_size(64)\n\
         fn main(@builtin(global_invocation_id) id: vec3<u32>) {{\n\
             let i = id.x;\n\
             if (i < arrayLength(&out)) {{ out[i] = {body}; }}\n\
         }}\n"
    );
    KernelSource { name: name.into(), wgsl }
}

fn add() -> KernelSource {
    kernel("add", "a[i] + b[i]")
}

fn ramp(n: usize, scale: f32) -> Tensor {
    Tensor::f32(&[n], (0..n).map(|i| i as f32 * scale).collect())
}

#[test]
fn opens_a_device_and_describes_it() {
    let line = gpu().describe();
    assert!(!line.is_empty() && !line.contains('\n'), "{line}");
    assert_eq!(BackendChoice::from_name(" Vulkan"), Some(BackendChoice::Vulkan));
    assert_eq!(BackendChoice::from_name("gl"), Some(BackendChoice::Gl));
    // llvmpipe (lavapipe) stops long loops silently, so its loop limit is set; other devices have none
    // (unless TDSL_MAX_LOOP_ITERATIONS says otherwise).
    if std::env::var(LOOP_LIMIT_ENV).is_err() {
        let llvmpipe = gpu().info.name.contains("llvmpipe");
        let limit = if llvmpipe { LLVMPIPE_LOOP_LIMIT } else { i64::MAX };
        assert_eq!(gpu().max_loop_iterations(), limit, "{line}");
    }
    assert_eq!(BackendChoice::from_name("metal"), None);
    let e = GpuError::NoAdapter { backend: BackendChoice::Vulkan, detail: "none".into() };
    assert!(e.to_string().starts_with(
        "no GPU adapter found for backend vulkan; on a machine without a GPU install Mesa's lavapipe \
         (Debian package mesa-vulkan-drivers)"
    ));
}

#[test]
fn adds_two_tensors() {
    let gpu = gpu();
    let n = 1000;
    let (a, b) = (ramp(n, 1.0), ramp(n, 0.5));
    let out = gpu.zeros(DType::F32, &[n]).unwrap();
    let step = Dispatch {
        pipeline: gpu.pipeline(&add()).unwrap(),
        buffers: vec![gpu.upload(&a).unwrap(), gpu.upload(&b).unwrap(), out.clone()],
        workgroups: [n.div_ceil(64) as u32, 1, 1],
    };
    gpu.run(&[step]).unwrap();
    let got = gpu.download(&out, DType::F32, &[n]).unwrap();
    assert_eq!(got, ramp(n, 1.5));
}

#[test]
fn chains_two_dispatches_in_one_submit() {
    let gpu = gpu();
    let n = 300;
    let (a, b, c) = (ramp(n, 1.0), ramp(n, 2.0), Tensor::f32(&[n], vec![-2.0; n]));
    let (a, b, c) = (gpu.upload(&a).unwrap(), gpu.upload(&b).unwrap(), gpu.upload(&c).unwrap());
    let sum = gpu.zeros(DType::F32, &[n]).unwrap();
    let product = gpu.zeros(DType::F32, &[n]).unwrap();
    let groups = [n.div_ceil(64) as u32, 1, 1];
    let steps = [
        Dispatch { pipeline: gpu.pipeline(&add()).unwrap(), buffers: vec![a, b, sum.clone()], workgroups: groups },
        Dispatch {
            pipeline: gpu.pipeline(&kernel("mul", "a[i] * b[i]")).unwrap(),
            buffers: vec![sum, c, product.clone()],
            workgroups: groups,
        },
    ];
    gpu.run(&steps).unwrap();
    assert_eq!(gpu.download(&product, DType::F32, &[n]).unwrap(), ramp(n, -6.0));
}

#[test]
fn pipeline_cache_returns_the_same_pipeline_for_the_same_source() {
    let gpu = gpu();
    let first = gpu.pipeline(&add()).unwrap();
    let renamed = KernelSource { name: "add_again".into(), ..add() };
    assert!(Arc::ptr_eq(&first, &gpu.pipeline(&add()).unwrap()));
    assert!(Arc::ptr_eq(&first, &gpu.pipeline(&renamed).unwrap()));
    assert!(!Arc::ptr_eq(&first, &gpu.pipeline(&kernel("sub", "a[i] - b[i]")).unwrap()));
}

#[test]
fn a_bad_kernel_is_an_error_naming_it() {
    let gpu = gpu();
    let syntax = KernelSource { name: "broken_syntax".into(), wgsl: "fn main( {".into() };
    let e = gpu.pipeline(&syntax).unwrap_err().to_string();
    assert!(e.starts_with("kernel broken_syntax failed to compile: "), "{e}");
    let types = kernel("broken_types", "a[i] + 1u");
    let e = gpu.pipeline(&types).unwrap_err().to_string();
    assert!(e.starts_with("kernel broken_types failed to compile: "), "{e}");
    assert!(e.len() > "kernel broken_types failed to compile: ".len() + 10, "{e}");
    let no_main = KernelSource { name: "no_main".into(), wgsl: "@compute @workgroup_size(1) fn other() {}".into() };
    let e = gpu.pipeline(&no_main).unwrap_err().to_string();
    assert!(e.starts_with("kernel no_main failed to compile: "), "{e}");
    // The failure is not cached: the next request tries again and fails the same way.
    assert!(gpu.pipeline(&syntax).is_err());
}

#[test]
fn bad_dispatches_are_errors() {
    let gpu = gpu();
    let pipeline = gpu.pipeline(&add()).unwrap();
    let buffer = gpu.upload(&ramp(4, 1.0)).unwrap();
    let too_many =
        Dispatch { pipeline: pipeline.clone(), buffers: vec![buffer.clone(); 3], workgroups: [1, 70_000, 1] };
    let e = gpu.run(&[too_many]).unwrap_err().to_string();
    assert_eq!(
        e,
        "dispatch 0 asks for [1, 70000, 1] workgroups but the device allows at most 65535 per dimension; fold the grid"
    );
    let missing_binding = Dispatch { pipeline, buffers: vec![buffer.clone(); 2], workgroups: [1, 1, 1] };
    let e = gpu.run(&[missing_binding]).unwrap_err().to_string();
    assert!(e.starts_with("running 1 dispatch(es) failed: "), "{e}");
    let e = gpu.download(&buffer, DType::F32, &[5]).unwrap_err().to_string();
    assert_eq!(e, "downloading a f32[5] tensor failed: it needs 20 bytes but the buffer holds 16");
}

#[test]
fn tensors_of_every_dtype_round_trip() {
    let gpu = gpu();
    let tensors = [
        Tensor::i32(&[2, 3], vec![i32::MIN, -1, 0, 1, 7, i32::MAX]),
        Tensor::u32(&[4], vec![0, 1, 0xdead_beef, u32::MAX]),
        Tensor::bool(&[5], vec![true, false, false, true, true]),
        Tensor::f16_from_f32(&[3], &[0.5, -2.0, 65504.0]),
        Tensor::f16_from_f32(&[2, 2], &[1.0, 0.0, -0.25, 3.0]),
        Tensor::f32(&[1, 2], vec![f32::MIN_POSITIVE, -0.0]),
        Tensor::f32(&[0, 3], vec![]),
        Tensor::u32(&[], vec![42]),
    ];
    for t in tensors {
        let buffer = gpu.upload(&t).unwrap();
        assert_eq!(buffer.size(), device_bytes(t.dtype, t.len()), "{t}");
        assert_eq!(gpu.download(&buffer, t.dtype, &t.shape).unwrap(), t);
    }
    let e = gpu.download(&gpu.upload(&Tensor::u32(&[2], vec![1, 2])).unwrap(), DType::Bool, &[2]).unwrap_err();
    assert_eq!(e.to_string(), "downloading a bool[2] tensor failed: bool element 1 is the word 0x2, not 0 or 1");
}

#[test]
fn kernels_see_the_device_layout_of_bool_and_f16() {
    let gpu = gpu();
    let source = KernelSource {
        name: "layout".into(),
        wgsl: "@group(0) @binding(0) var<storage, read> flags: array<u32>;\n\
               @group(0) @binding(1) var<storage, read> halves: array<f32>;\n\
               @group(0) @binding(2) var<storage, read_write> out: array<f32>;\n\
               @compute @workgroup_size(64)\n\
               fn main(@builtin(global_invocation_id) id: vec3<u32>) {\n\
                   let i = id.x;\n\
                   if (i < 3u) {\n\
                       out[i] = select(-halves[i], halves[i], flags[i] == 1u);\n\
                   }\n\
               }\n"
        .into(),
    };
    let flags = gpu.upload(&Tensor::bool(&[3], vec![true, false, true])).unwrap();
    let halves = gpu.upload(&Tensor::f16_from_f32(&[3], &[1.5, 2.0, -0.75])).unwrap();
    assert_eq!(halves.size(), 16, "three f16 elements as f32 words, padded to 16 bytes");
    let out = gpu.zeros(DType::F32, &[3]).unwrap();
    let step = Dispatch {
        pipeline: gpu.pipeline(&source).unwrap(),
        buffers: vec![flags, halves, out.clone()],
        workgroups: [1, 1, 1],
    };
    gpu.run(&[step]).unwrap();
    assert_eq!(gpu.download(&out, DType::F32, &[3]).unwrap(), Tensor::f32(&[3], vec![1.5, -2.0, -0.75]));
    // An f16 tensor a kernel wrote as f32 words is rounded to the nearest f16 on download.
    let rounded = gpu.download(&out, DType::F16, &[3]).unwrap();
    assert_eq!(rounded, Tensor::f16_from_f32(&[3], &[1.5, -2.0, -0.75]));
    let third = gpu.upload(&Tensor::f32(&[1], vec![1.0 / 3.0])).unwrap();
    let got = gpu.download(&third, DType::F16, &[1]).unwrap();
    assert_eq!(got, Tensor::f16(&[1], vec![half::f16::from_f32(1.0 / 3.0)]));
}
