//! `Model`: a program loaded onto one device for real use. Loading validates the program, binds its params
//! (their shapes, once) and uploads them, builds every pipeline and fixes the buffer plan (slots that hold
//! for every size: a bundle's carried plan, checked, or `plan_slots`). A call then uploads only its inputs
//! and runs; the params stay resident however many calls follow.
//!
//! The model keeps every buffer it makes and reuses it on the next call: one per host input, one per slot
//! of computed tensors, one per output handed out, one per uniform block and the status buffer. A buffer
//! grows when a call needs more than it holds and never shrinks, so after the largest shapes have been seen
//! a call allocates nothing; uniform blocks are rewritten only when their bytes change, and bind groups are
//! remade only for launches whose buffers changed. Inputs come as host tensors or as `DeviceTensor`s (bound
//! as they are, no copy), by position or by name; outputs come back as host tensors (`run`) or stay on the
//! device (`call`: each output is copied, in the same submission, into a buffer the caller then holds; the
//! model reuses it only after every handle to it is dropped). `prepare` stages a call without running it,
//! for benchmarks that dispatch the same inputs repeatedly.
//!
//! Limits: calls take `&mut self` (one call at a time per model; load the program twice for concurrent
//! use); a call that reads a kernel's status buffer waits for the device.

use std::borrow::Cow;
use std::sync::Arc;

use super::param_specs;
use super::{ExecError, MemoryPlan, ParamSource, check_slots, declared, memory_from_slots, plan_slots};
use super::{plan_launches, tensor_shapes};
use crate::bind::{BindError, Declared, Given, Signature, bind_given, bind_partial};
use crate::gpu::{BoundDispatch, DeviceTensor, Dispatch, DispatchTimes, Gpu, GpuError, device_bytes, to_device_bytes};
use crate::program::{Arg, Program, TensorRole, type_string};
use crate::{DType, Tensor};

/// What `Gpu::load_with` may be given besides the program and its params.
#[derive(Clone, Copy, Default)]
pub struct LoadOptions<'p> {
    /// A carried buffer plan (a bundle's `buffer_slots`); `None`: `plan_slots` of the program.
    pub slots: Option<&'p [Option<usize>]>,
    /// Called after each param upload with (bytes uploaded, bytes of all params).
    pub progress: Option<&'p dyn Fn(u64, u64)>,
}

/// One input of a call: a host tensor (uploaded into a buffer the model keeps) or a tensor already on the
/// device (bound as it is).
#[derive(Clone, Copy, Debug)]
pub enum Input<'t> {
    /// A host tensor.
    Host(&'t Tensor),
    /// A tensor on the model's device, e.g. another model's output.
    Device(&'t DeviceTensor),
}

impl<'t> From<&'t Tensor> for Input<'t> {
    fn from(tensor: &'t Tensor) -> Self {
        Input::Host(tensor)
    }
}

impl<'t> From<&'t DeviceTensor> for Input<'t> {
    fn from(tensor: &'t DeviceTensor) -> Self {
        Input::Device(tensor)
    }
}

impl Input<'_> {
    fn given(&self) -> Given<'_> {
        match self {
            Input::Host(tensor) => Given::Tensor(tensor),
            Input::Device(tensor) => Given::Shape { dtype: tensor.dtype, shape: &tensor.shape },
        }
    }
}

/// The outputs of a call, on the device, in the program's output order and by name.
#[derive(Clone, Debug)]
pub struct Outputs {
    names: Vec<String>,
    tensors: Vec<DeviceTensor>,
}

impl Outputs {
    /// The output called `name`.
    pub fn get(&self, name: &str) -> Option<&DeviceTensor> {
        self.names.iter().position(|n| n == name).map(|k| &self.tensors[k])
    }

    /// The output names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The outputs in order.
    pub fn tensors(&self) -> &[DeviceTensor] {
        &self.tensors
    }

    /// The outputs in order, as owned handles.
    pub fn into_tensors(self) -> Vec<DeviceTensor> {
        self.tensors
    }

    /// Every output copied back to the host, in order, each with its name.
    pub fn download(&self, gpu: &Gpu) -> Result<Vec<(String, Tensor)>, ExecError> {
        self.names
            .iter()
            .zip(&self.tensors)
            .map(|(name, tensor)| {
                let host =
                    tensor.download(gpu).map_err(|source| ExecError::Download { output: name.clone(), source })?;
                Ok((name.clone(), host))
            })
            .collect()
    }
}

/// A program resident on one device (see the module comment): built by `Gpu::load` or `Session::load`.
pub struct Model<'a> {
    gpu: GpuHandle<'a>,
    program: Cow<'a, Program>,
    slots: Vec<Option<usize>>,
    /// Per launch, its pipeline.
    pipelines: Vec<Arc<wgpu::ComputePipeline>>,
    /// Per param (in `program.params` order), the dtype and shape it was loaded with.
    param_types: Vec<(DType, Vec<usize>)>,
    /// Per tensor, the buffer of a param.
    param_buffers: Vec<Option<wgpu::Buffer>>,
    kept: Kept,
}

/// The device of a model: borrowed (`Gpu::load`) or shared (`Gpu::load_shared`, a model that can live
/// in a struct beside its device).
pub(super) enum GpuHandle<'a> {
    Borrowed(&'a Gpu),
    Shared(Arc<Gpu>),
}

impl std::ops::Deref for GpuHandle<'_> {
    type Target = Gpu;
    fn deref(&self) -> &Gpu {
        match self {
            GpuHandle::Borrowed(gpu) => gpu,
            GpuHandle::Shared(gpu) => gpu,
        }
    }
}

/// The buffers a model keeps between calls.
#[derive(Default)]
struct Kept {
    /// Per input position, the buffer host inputs are written into.
    inputs: Vec<Option<wgpu::Buffer>>,
    /// Per slot of the buffer plan.
    slots: Vec<Option<wgpu::Buffer>>,
    /// Per output position, the buffer the last `call` copied it into.
    outputs: Vec<Option<Arc<wgpu::Buffer>>>,
    /// Per launch, per uniform argument: the buffer and the bytes last written.
    uniforms: Vec<Vec<(wgpu::Buffer, Vec<u8>)>>,
    /// Per launch, its bind group and the buffers it binds.
    bound: Vec<Option<(wgpu::BindGroup, Vec<wgpu::Buffer>)>>,
    status: Option<wgpu::Buffer>,
    /// Bound for a computed tensor that has no slot (no launch writes it).
    spare: Option<wgpu::Buffer>,
}

/// A call staged on the device by `Model::prepare`: inputs uploaded, buffers sized, bind groups made.
/// `run` dispatches every launch (again and again, for benchmarks); `outputs` reads the results back.
pub struct Prepared<'m> {
    gpu: &'m Gpu,
    program: &'m Program,
    staged: Staged,
    /// Where every tensor lives and the device bytes the call takes.
    pub memory: MemoryPlan,
}

/// A staged call, owning handles to everything it binds.
struct Staged {
    shapes: Vec<Vec<usize>>,
    /// Per tensor, the buffer it lives in.
    buffers: Vec<wgpu::Buffer>,
    status: Option<wgpu::Buffer>,
    steps: Vec<BoundDispatch>,
    /// `steps[i]` runs `program.launches[launch_of_step[i]]`.
    launch_of_step: Vec<usize>,
}

impl Staged {
    /// Waits for the submitted work and checks the status buffer.
    fn finish(&self, gpu: &Gpu, program: &Program) -> Result<(), ExecError> {
        match &self.status {
            Some(status) => gpu.check_status(program, status),
            None => Ok(gpu.wait(self.steps.len())?),
        }
    }
}

impl<'a> Model<'a> {
    /// See `Gpu::load_with`.
    pub(super) fn load(
        gpu: GpuHandle<'a>,
        program: Cow<'a, Program>,
        options: &LoadOptions,
        params: &dyn ParamSource,
    ) -> Result<Model<'a>, ExecError> {
        program.validate().map_err(|problems| ExecError::Invalid { program: program.name.clone(), problems })?;
        gpu.check_requirements(&program)?;
        let slots = match options.slots {
            Some(slots) => {
                check_slots(&program, slots)
                    .map_err(|problems| ExecError::BufferPlan { program: program.name.clone(), problems })?;
                slots.to_vec()
            }
            None => plan_slots(&program),
        };
        let param_types = bind_params(&program, params)?;
        let pipelines =
            program.launches.iter().map(|launch| gpu.launch_pipeline(launch)).collect::<Result<Vec<_>, _>>()?;
        let mut param_buffers = vec![None; program.tensors.len()];
        let total: u64 = param_types.iter().map(|(dtype, shape)| device_bytes(*dtype, shape.iter().product())).sum();
        let mut uploaded = 0;
        for &id in &program.params {
            let decl = program.tensor(id);
            let TensorRole::Param(key) = &decl.role else { continue };
            let bytes = params
                .device_bytes(key, decl.dtype)
                .map_err(|source| ExecError::ParamData { key: key.clone(), source })?;
            let buffer = gpu
                .upload_device_bytes(&bytes)
                .map_err(|source| ExecError::Upload { tensor: decl.name.clone(), source })?;
            uploaded += bytes.len() as u64;
            if let Some(progress) = options.progress {
                progress(uploaded.min(total), total);
            }
            param_buffers[id.0 as usize] = Some(buffer);
        }
        Ok(Model { gpu, program, slots, pipelines, param_types, param_buffers, kept: Kept::default() })
    }

    /// The program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The device the model lives on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The inputs, in the order calls take them by position.
    pub fn inputs(&self) -> Vec<Declared> {
        declared(&self.program, &self.program.inputs)
    }

    /// The output names, in the order calls return them.
    pub fn output_names(&self) -> Vec<&str> {
        self.program.outputs.iter().map(|(name, _)| name.as_str()).collect()
    }

    /// Device bytes of the params held resident.
    pub fn param_bytes(&self) -> u64 {
        self.param_buffers.iter().flatten().map(|b| b.size()).sum()
    }

    /// Device bytes of each param's buffer, by key, in `Program::params` order.
    pub fn param_buffer_bytes(&self) -> Vec<(&str, u64)> {
        self.program
            .params
            .iter()
            .filter_map(|&id| {
                let TensorRole::Param(key) = &self.program.tensor(id).role else { return None };
                Some((key.as_str(), self.param_buffers[id.0 as usize].as_ref().map_or(0, |b| b.size())))
            })
            .collect()
    }

    /// Device bytes of every other buffer the model keeps now: its inputs, the shared slots of computed
    /// tensors (activations), outputs handed out, uniform blocks and the status word.
    pub fn working_bytes(&self) -> u64 {
        let k = &self.kept;
        let buffers = k.inputs.iter().chain(&k.slots).chain([&k.status, &k.spare]).flatten().map(|b| b.size());
        let outputs = k.outputs.iter().flatten().map(|b| b.size());
        let uniforms = k.uniforms.iter().flatten().map(|(b, _)| b.size());
        buffers.chain(outputs).chain(uniforms).sum()
    }

    /// Runs once on host `inputs` (signature order); returns the outputs in `output_names` order, on the
    /// host. Only the inputs are uploaded.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ExecError> {
        let inputs: Vec<Input> = inputs.iter().map(Input::Host).collect();
        let prepared = self.prepare(&inputs)?;
        prepared.run()?;
        prepared.outputs()
    }

    /// `run` with inputs by name: every input exactly once, in any order.
    pub fn run_named(&mut self, inputs: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>, ExecError> {
        let named: Vec<(&str, Input)> = inputs.iter().map(|&(name, t)| (name, Input::Host(t))).collect();
        let ordered = self.by_name(&named)?;
        let prepared = self.prepare(&ordered)?;
        prepared.run()?;
        let names: Vec<String> = prepared.program.outputs.iter().map(|(name, _)| name.clone()).collect();
        Ok(names.into_iter().zip(prepared.outputs()?).collect())
    }

    /// Runs once on `inputs` (signature order; host or device tensors); the outputs stay on the device.
    pub fn call(&mut self, inputs: &[Input]) -> Result<Outputs, ExecError> {
        let (staged, _) = self.stage(inputs)?;
        let gpu: &Gpu = &self.gpu;
        let count = self.program.outputs.len();
        self.kept.outputs.resize(count, None);
        let mut tensors = Vec::with_capacity(count);
        for (k, (_, id)) in self.program.outputs.iter().enumerate() {
            let decl = self.program.tensor(*id);
            let shape = staged.shapes[id.0 as usize].clone();
            let bytes = device_bytes(decl.dtype, shape.iter().product());
            // A buffer still held by a caller is never written again; a free one is reused when large enough.
            let slot = &mut self.kept.outputs[k];
            let reusable = slot.as_ref().filter(|b| Arc::strong_count(b) == 1 && b.size() >= bytes);
            let buffer = match reusable {
                Some(buffer) => buffer.clone(),
                None => {
                    let buffer = Arc::new(
                        gpu.storage_buffer(bytes)
                            .map_err(|source| ExecError::Upload { tensor: decl.name.clone(), source })?,
                    );
                    *slot = Some(buffer.clone());
                    buffer
                }
            };
            tensors.push(gpu.device_tensor(buffer, decl.dtype, shape));
        }
        let copies: Vec<(&wgpu::Buffer, &wgpu::Buffer, u64)> = self
            .program
            .outputs
            .iter()
            .zip(&tensors)
            .map(|((_, id), t)| {
                (&staged.buffers[id.0 as usize], &*t.buffer, device_bytes(t.dtype, t.shape.iter().product()))
            })
            .collect();
        gpu.submit_with(&staged.steps, staged.status.as_ref(), &copies)?;
        staged.finish(gpu, &self.program)?;
        let names = self.program.outputs.iter().map(|(name, _)| name.clone()).collect();
        Ok(Outputs { names, tensors })
    }

    /// Runs once on `inputs` (signature order) and carries the program's state forward: each of
    /// `Program::updates` copies its output into its param's buffer in the same submission, after every
    /// launch, so the next call reads the new values (a training step: params and optimizer state never leave
    /// the device). Returns the outputs named in `read`, in that order, downloaded after the updates; an
    /// output that is itself an updated param reads its new value. When a kernel reports a run-time error the
    /// updates have already been applied: the state is then undefined (reload it).
    pub fn step(&mut self, inputs: &[Input], read: &[&str]) -> Result<Vec<Tensor>, ExecError> {
        let mut wanted = Vec::with_capacity(read.len());
        let mut problems = Vec::new();
        for &name in read {
            match self.program.outputs.iter().find(|(n, _)| n == name) {
                Some((_, id)) => wanted.push((name, *id)),
                None => problems.push(format!("there is no output `{name}`")),
            }
        }
        if !problems.is_empty() {
            return Err(ExecError::InputNames { model: self.program.name.clone(), problems });
        }
        let (staged, _) = self.stage(inputs)?;
        let gpu: &Gpu = &self.gpu;
        let mut copies = Vec::with_capacity(self.program.updates.len());
        for update in &self.program.updates {
            let (_, source) = &self.program.outputs[update.output];
            let (from, to) = (&staged.buffers[source.0 as usize], &staged.buffers[update.param.0 as usize]);
            let decl = self.program.tensor(update.param);
            let bytes = device_bytes(decl.dtype, staged.shapes[update.param.0 as usize].iter().product());
            // An output that is the param itself (an update that changes nothing) needs no copy.
            if from != to && bytes > 0 {
                copies.push((from, to, bytes));
            }
        }
        gpu.submit_with(&staged.steps, staged.status.as_ref(), &copies)?;
        staged.finish(gpu, &self.program)?;
        wanted
            .into_iter()
            .map(|(name, id)| {
                let decl = self.program.tensor(id);
                gpu.download(&staged.buffers[id.0 as usize], decl.dtype, &staged.shapes[id.0 as usize])
                    .map_err(|source| ExecError::Download { output: name.to_string(), source })
            })
            .collect()
    }

    /// The params as they are now on the device (after any `step`s), by key, in `Program::params` order.
    pub fn download_params(&self) -> Result<Vec<(String, Tensor)>, ExecError> {
        self.program
            .params
            .iter()
            .zip(&self.param_types)
            .map(|(&id, (dtype, shape))| {
                let decl = self.program.tensor(id);
                let key = match &decl.role {
                    TensorRole::Param(key) => key.clone(),
                    _ => decl.name.clone(),
                };
                let buffer = self.param_buffers[id.0 as usize]
                    .as_ref()
                    .ok_or_else(|| internal(&format!("param `{key}` has no buffer")))?;
                let tensor = self
                    .gpu
                    .download(buffer, *dtype, shape)
                    .map_err(|source| ExecError::Download { output: key.clone(), source })?;
                Ok((key, tensor))
            })
            .collect()
    }

    /// `call` with inputs by name: every input exactly once, in any order.
    pub fn call_named(&mut self, inputs: &[(&str, Input)]) -> Result<Outputs, ExecError> {
        let ordered = self.by_name(inputs)?;
        self.call(&ordered)
    }

    /// Stages a call on `inputs` (signature order) without running it: everything checked, inputs
    /// uploaded, buffers sized, bind groups made. The `Prepared` runs any number of times on those inputs.
    pub fn prepare(&mut self, inputs: &[Input]) -> Result<Prepared<'_>, ExecError> {
        let (staged, memory) = self.stage(inputs)?;
        Ok(Prepared { gpu: &self.gpu, program: &self.program, staged, memory })
    }

    /// `inputs` by name put in signature order (as `call`, `step` and `prepare` take them); unknown,
    /// repeated and missing names are one error.
    pub fn inputs_by_name<'t>(&self, inputs: &[(&str, Input<'t>)]) -> Result<Vec<Input<'t>>, ExecError> {
        self.by_name(inputs)
    }

    /// See `inputs_by_name`.
    fn by_name<'t>(&self, inputs: &[(&str, Input<'t>)]) -> Result<Vec<Input<'t>>, ExecError> {
        order_inputs(&self.program, inputs)
    }

    /// Everything before the dispatches (see `prepare`).
    fn stage(&mut self, inputs: &[Input]) -> Result<(Staged, MemoryPlan), ExecError> {
        let (gpu, program): (&Gpu, &Program) = (&self.gpu, &self.program);
        for (input, declared) in inputs.iter().zip(&program.inputs) {
            if let Input::Device(tensor) = input {
                gpu.check_owner(tensor).map_err(|source| {
                    let input = match &program.tensor(*declared).role {
                        TensorRole::Input(name) => name.clone(),
                        _ => program.tensor(*declared).name.clone(),
                    };
                    ExecError::Input { input, source }
                })?;
            }
        }
        let symbols = self.bind(inputs)?;
        let limits = gpu.limits();
        let shapes = tensor_shapes(program, &symbols, &limits)?;
        let plans = plan_launches(program, &symbols, &limits)?;
        let bytes: Vec<u64> = program
            .tensors
            .iter()
            .zip(&shapes)
            .map(|(decl, shape)| device_bytes(decl.dtype, shape.iter().product()))
            .collect();
        let memory = memory_from_slots(program, &self.slots, &bytes);
        let kept = &mut self.kept;
        let upload = |tensor: &str| {
            let tensor = tensor.to_string();
            move |source| ExecError::Upload { tensor, source }
        };

        kept.slots.resize(memory.buffers.len(), None);
        for (slot, &size) in kept.slots.iter_mut().zip(&memory.buffers) {
            grow(gpu, slot, size).map_err(upload(&format!("a shared buffer of {size} bytes")))?;
        }
        kept.inputs.resize(program.inputs.len(), None);
        let mut input_of: Vec<Option<wgpu::Buffer>> = vec![None; program.tensors.len()];
        for ((input, id), slot) in inputs.iter().zip(&program.inputs).zip(&mut kept.inputs) {
            let buffer = match input {
                Input::Device(tensor) => (*tensor.buffer).clone(),
                Input::Host(tensor) => {
                    let name = &program.tensor(*id).name;
                    let data = to_device_bytes(&tensor.data);
                    let buffer = grow(gpu, slot, data.len() as u64).map_err(upload(name))?;
                    gpu.write_storage(buffer, &data);
                    buffer.clone()
                }
            };
            input_of[id.0 as usize] = Some(buffer);
        }
        let mut buffers = Vec::with_capacity(program.tensors.len());
        for (i, decl) in program.tensors.iter().enumerate() {
            let buffer = match (&decl.role, memory.buffer_of[i]) {
                (TensorRole::Input(_), _) => input_of[i].clone(),
                (TensorRole::Param(_), _) => self.param_buffers[i].clone(),
                (TensorRole::Computed, Some(slot)) => kept.slots[slot].clone(),
                (TensorRole::Computed, None) => {
                    Some(grow(gpu, &mut kept.spare, 16).map_err(upload(&decl.name))?.clone())
                }
            };
            buffers.push(buffer.ok_or_else(|| internal(&format!("tensor `{}` has no buffer", decl.name)))?);
        }
        let needs_status = program.launches.iter().any(|l| l.args.contains(&Arg::Status));
        if needs_status {
            grow(gpu, &mut kept.status, 16).map_err(upload("(the status buffer)"))?;
        }

        kept.uniforms.resize_with(program.launches.len(), Vec::new);
        kept.bound.resize(program.launches.len(), None);
        let mut rebind = Vec::new();
        let mut launch_args = Vec::with_capacity(program.launches.len());
        for (index, (launch, plan)) in program.launches.iter().zip(&plans).enumerate() {
            let uniforms = &mut kept.uniforms[index];
            let mut blocks = plan.uniforms.iter();
            let mut args = Vec::with_capacity(launch.args.len());
            let mut u = 0;
            for arg in &launch.args {
                args.push(match arg {
                    Arg::Read(id) | Arg::Write(id) => buffers[id.0 as usize].clone(),
                    Arg::Uniform(_) => {
                        let block = blocks.next().map_or(&[][..], |b| b.as_slice());
                        let size = (block.len() as u64).next_multiple_of(16).max(16);
                        match uniforms.get_mut(u) {
                            Some((buffer, last)) if buffer.size() >= size => {
                                if last != block {
                                    gpu.write_uniform(buffer, block);
                                    *last = block.to_vec();
                                }
                            }
                            _ => {
                                let buffer = gpu.uniform(block)?;
                                uniforms.truncate(u);
                                uniforms.push((buffer, block.to_vec()));
                            }
                        }
                        u += 1;
                        uniforms[u - 1].0.clone()
                    }
                    Arg::Status => kept.status.clone().ok_or_else(|| internal("there is no status buffer"))?,
                });
            }
            if plan.grid.is_some() && kept.bound[index].as_ref().is_none_or(|(_, bound)| *bound != args) {
                rebind.push(index);
            }
            launch_args.push(args);
        }
        if !rebind.is_empty() {
            let dispatches: Vec<Dispatch> = rebind
                .iter()
                .map(|&i| Dispatch {
                    pipeline: self.pipelines[i].clone(),
                    buffers: launch_args[i].clone(),
                    workgroups: [1, 1, 1],
                })
                .collect();
            for (&i, bound) in rebind.iter().zip(gpu.bind(&dispatches)?) {
                kept.bound[i] = bound.bind_group.map(|group| (group, std::mem::take(&mut launch_args[i])));
            }
        }
        let mut steps = Vec::new();
        let mut launch_of_step = Vec::new();
        for (index, plan) in plans.iter().enumerate() {
            let Some(workgroups) = plan.grid else { continue };
            let bind_group = kept.bound[index].as_ref().map(|(group, _)| group.clone());
            steps.push(BoundDispatch { pipeline: self.pipelines[index].clone(), bind_group, workgroups });
            launch_of_step.push(index);
        }
        let status = kept.status.clone().filter(|_| needs_status);
        Ok((Staged { shapes, buffers, status, steps, launch_of_step }, memory))
    }

    /// The symbols from `inputs` and the params' loaded shapes; problems name the input or param.
    fn bind(&self, inputs: &[Input]) -> Result<Vec<i64>, ExecError> {
        let program = &*self.program;
        let (declared_inputs, declared_params) = (self.inputs(), declared(program, &program.params));
        let signature = Signature {
            model: &program.name,
            symbols: &program.symbols,
            inputs: &declared_inputs,
            params: &declared_params,
        };
        let given: Vec<Given> = inputs.iter().map(Input::given).collect();
        let param = |key: &str| {
            let k = declared_params.iter().position(|d| d.site.name() == key)?;
            let (dtype, shape) = self.param_types.get(k)?;
            Some(Given::Shape { dtype: *dtype, shape })
        };
        bind_given(&signature, &given, &param).map_err(ExecError::Bind)
    }
}

impl Prepared<'_> {
    /// Runs every launch (one encoder, one submission), waits for the device and checks the status buffer.
    pub fn run(&self) -> Result<(), ExecError> {
        self.gpu.submit_with(&self.staged.steps, self.staged.status.as_ref(), &[])?;
        self.staged.finish(self.gpu, self.program)
    }

    /// Times each launch on its own (`Gpu::time_dispatches`, median of `repeat`); returns the launch index
    /// of each timed dispatch with the times. The outputs afterwards are those of a normal run.
    pub fn profile(&self, repeat: usize) -> Result<(Vec<usize>, DispatchTimes), ExecError> {
        let times = self.gpu.time_dispatches(&self.staged.steps, repeat)?;
        Ok((self.staged.launch_of_step.clone(), times))
    }

    /// Median wall time of the same dispatches recorded with plain wgpu calls (`Gpu::time_raw`): what
    /// `run` costs without this runtime (no status buffer, no error scopes).
    pub fn time_raw(&self, repeat: usize) -> Result<std::time::Duration, ExecError> {
        Ok(self.gpu.time_raw(&self.staged.steps, repeat)?)
    }

    /// The outputs of the last run, in `program.outputs` order.
    pub fn outputs(&self) -> Result<Vec<Tensor>, ExecError> {
        self.program
            .outputs
            .iter()
            .map(|(output, id)| {
                let decl = self.program.tensor(*id);
                self.gpu
                    .download(&self.staged.buffers[id.0 as usize], decl.dtype, &self.staged.shapes[id.0 as usize])
                    .map_err(|source| ExecError::Download { output: output.clone(), source })
            })
            .collect()
    }

    /// Launches dispatched per run (launches with no invocations are skipped).
    pub fn dispatches(&self) -> usize {
        self.staged.steps.len()
    }
}

/// `slot`'s buffer, replaced by a new one of `size` bytes when it is missing or smaller (never shrunk).
fn grow<'s>(gpu: &Gpu, slot: &'s mut Option<wgpu::Buffer>, size: u64) -> Result<&'s wgpu::Buffer, GpuError> {
    if slot.as_ref().is_none_or(|b| b.size() < size) {
        *slot = Some(gpu.storage_buffer(size)?);
    }
    slot.as_ref().ok_or(GpuError::Run { steps: 0, message: "internal error: no buffer".into() })
}

fn internal(message: &str) -> ExecError {
    ExecError::Gpu(GpuError::Run { steps: 0, message: format!("internal error: {message}") })
}

/// `inputs` given by name, in `program`'s signature order: every input exactly once, in any order; every
/// unknown, repeated and missing name in one error. Both executors take named inputs through it.
pub(crate) fn order_inputs<T: Copy>(program: &Program, inputs: &[(&str, T)]) -> Result<Vec<T>, ExecError> {
    let declared = declared(program, &program.inputs);
    let mut ordered: Vec<Option<T>> = vec![None; declared.len()];
    let mut problems = Vec::new();
    for &(name, input) in inputs {
        match declared.iter().position(|d| d.site.name() == name) {
            None => problems.push(format!("there is no input `{name}`")),
            Some(k) if ordered[k].is_some() => problems.push(format!("input `{name}` is given twice")),
            Some(k) => ordered[k] = Some(input),
        }
    }
    for (d, given) in declared.iter().zip(&ordered) {
        if given.is_none() {
            problems.push(format!("input `{}` is not given", d.site.name()));
        }
    }
    if !problems.is_empty() {
        return Err(ExecError::InputNames { model: program.name.clone(), problems });
    }
    Ok(ordered.into_iter().flatten().collect())
}

/// Binds the params alone, at load: each must be in `params` (a weights file is first checked as a whole,
/// its symbolic dimensions matching any size) and they must agree with one another. Returns each param's
/// dtype and shape, in `program.params` order; the inputs bind the rest at each call.
pub(crate) fn bind_params(program: &Program, params: &dyn ParamSource) -> Result<Vec<(DType, Vec<usize>)>, ExecError> {
    if let Err(error) = params.check(&param_specs(program)) {
        return Err(ExecError::Params { inputs: Vec::new(), error });
    }
    let declared_params = declared(program, &program.params);
    let mut problems = Vec::new();
    let mut entries = Vec::new();
    for declared in &declared_params {
        match params.given(declared.site.name(), declared.dtype) {
            Some(given) => entries.push((declared, given)),
            None => problems.push(BindError::MissingParam {
                key: declared.site.name().to_string(),
                expected: type_string(declared.dtype, &declared.shape, &program.symbols),
            }),
        }
    }
    problems.extend(bind_partial(&program.symbols, &entries).problems);
    if !problems.is_empty() {
        return Err(ExecError::Bind(problems));
    }
    Ok(entries
        .iter()
        .map(|(_, given)| match given {
            Given::Tensor(t) => (t.dtype, t.shape.clone()),
            Given::Shape { dtype, shape } => (*dtype, shape.to_vec()),
        })
        .collect())
}

impl<'a> From<&'a Program> for Cow<'a, Program> {
    fn from(program: &'a Program) -> Self {
        Cow::Borrowed(program)
    }
}

impl From<Program> for Cow<'_, Program> {
    fn from(program: Program) -> Self {
        Cow::Owned(program)
    }
}
