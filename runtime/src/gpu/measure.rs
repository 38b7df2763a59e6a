//! Device measurements for benchmarks (`tdslc bench`): the time of each dispatch of a program (timestamp
//! queries where the device has `Features::TIMESTAMP_QUERY`, otherwise wall time over repeated dispatches),
//! the device's buffer-copy bandwidth (the reference memory-bound kernels are compared with), and the wall
//! time of a list of dispatches recorded with raw wgpu calls (the reference for dispatch overhead). Nothing
//! here runs in a model's forward pass.

use std::time::{Duration, Instant};

use super::{BoundDispatch, Gpu, GpuError};

/// How dispatch times were taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// GPU timestamps written at the start and end of a compute pass holding the dispatch alone.
    Timestamps,
    /// Wall time of a submission that repeats the dispatch, divided by the repeats (includes the device's
    /// per-dispatch overhead).
    Wall,
}

impl Timing {
    /// `timestamps` or `wall`, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Timing::Timestamps => "timestamps",
            Timing::Wall => "wall",
        }
    }
}

/// The median time of each dispatch, in order.
#[derive(Clone, Debug)]
pub struct DispatchTimes {
    /// One median per dispatch.
    pub times: Vec<Duration>,
    /// How they were taken.
    pub timing: Timing,
}

/// Timestamp queries per query set (wgpu's maximum): two per dispatch.
const QUERIES: u32 = wgpu::QUERY_SET_MAX_QUERIES;
/// Dispatches per submission when timing by wall clock.
const WALL_REPEATS: usize = 8;

impl Gpu {
    /// Whether dispatch times come from GPU timestamps.
    pub fn has_timestamps(&self) -> bool {
        self.device.features().contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Times every step on its own, `repeat` times (at least once), and returns each step's median. The
    /// steps run in order, so each sees the data its predecessors wrote, as in a forward pass.
    pub fn time_dispatches(&self, steps: &[BoundDispatch], repeat: usize) -> Result<DispatchTimes, GpuError> {
        let repeat = repeat.max(1);
        let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(repeat); steps.len()];
        let timing = if self.has_timestamps() { Timing::Timestamps } else { Timing::Wall };
        for _ in 0..repeat {
            match timing {
                Timing::Timestamps => {
                    for (chunk, steps) in steps.chunks((QUERIES / 2) as usize).enumerate() {
                        let times = self.timestamped(steps)?;
                        for (i, t) in times.into_iter().enumerate() {
                            samples[chunk * (QUERIES / 2) as usize + i].push(t);
                        }
                    }
                }
                Timing::Wall => {
                    for (i, step) in steps.iter().enumerate() {
                        let repeated = vec![step.clone(); WALL_REPEATS];
                        let time = self.time_submission(&repeated)?;
                        samples[i].push(time / WALL_REPEATS as u32);
                    }
                }
            }
        }
        Ok(DispatchTimes { times: samples.into_iter().map(median).collect(), timing })
    }

    /// One submission with each step in a compute pass of its own, bracketed by timestamps.
    fn timestamped(&self, steps: &[BoundDispatch]) -> Result<Vec<Duration>, GpuError> {
        let fail = |message: String| GpuError::Run { steps: steps.len(), message };
        let count = 2 * steps.len() as u32;
        let bytes = u64::from(count) * wgpu::QUERY_SIZE as u64;
        let readback = self
            .scoped(|| {
                let queries = self.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("tdsl timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count,
                });
                let resolved = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("tdsl timestamps"),
                    size: bytes,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                let readback = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("tdsl timestamps readback"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let mut encoder = self.device.create_command_encoder(&Default::default());
                for (i, step) in steps.iter().enumerate() {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &queries,
                            beginning_of_pass_write_index: Some(2 * i as u32),
                            end_of_pass_write_index: Some(2 * i as u32 + 1),
                        }),
                    });
                    step.record(&mut pass);
                }
                encoder.resolve_query_set(&queries, 0..count, &resolved, 0);
                encoder.copy_buffer_to_buffer(&resolved, 0, &readback, 0, bytes);
                self.queue.submit([encoder.finish()]);
                readback
            })
            .map_err(fail)?;
        let words: Vec<u64> = self
            .read_mapped(&readback)
            .map_err(|e| fail(format!("reading the timestamps: {e}")))?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let period = f64::from(self.queue.get_timestamp_period());
        Ok(words
            .chunks_exact(2)
            .map(|pair| Duration::from_secs_f64(pair[1].saturating_sub(pair[0]) as f64 * period * 1e-9))
            .collect())
    }

    /// Wall time of recording `steps` in one pass, submitting, and waiting for the device.
    fn time_submission(&self, steps: &[BoundDispatch]) -> Result<Duration, GpuError> {
        let start = Instant::now();
        self.submit(steps)?;
        self.wait(steps.len())?;
        Ok(start.elapsed())
    }

    /// Waits until the device has finished everything submitted.
    pub(crate) fn wait(&self, steps: usize) -> Result<(), GpuError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| GpuError::Run { steps, message: format!("waiting for the GPU: {e}") })
    }

    /// The device's buffer-copy bandwidth in GB/s (10^9 bytes per second), counting the bytes read and the
    /// bytes written: the median over `repeat` submissions of 8 copies of `bytes` (clamped to the device's
    /// buffer size limit) from one buffer to another, by wall clock.
    pub fn copy_bandwidth(&self, bytes: u64, repeat: usize) -> Result<f64, GpuError> {
        let bytes = bytes.min(self.device.limits().max_buffer_size).max(4) / 4 * 4;
        const COPIES: u64 = 8;
        let fail = |message: String| GpuError::Run { steps: 1, message };
        let (source, target) = self
            .scoped(|| {
                let buffer = |label| {
                    self.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(label),
                        size: bytes,
                        usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    })
                };
                (buffer("tdsl copy source"), buffer("tdsl copy target"))
            })
            .map_err(fail)?;
        let copy = || -> Result<Duration, GpuError> {
            let start = Instant::now();
            self.scoped(|| {
                let mut encoder = self.device.create_command_encoder(&Default::default());
                for _ in 0..COPIES {
                    encoder.copy_buffer_to_buffer(&source, 0, &target, 0, bytes);
                }
                self.queue.submit([encoder.finish()]);
            })
            .map_err(fail)?;
            self.wait(1)?;
            Ok(start.elapsed())
        };
        copy()?;
        let times = (0..repeat.max(1)).map(|_| copy()).collect::<Result<Vec<_>, _>>()?;
        Ok((2 * bytes * COPIES) as f64 / median(times).as_secs_f64().max(1e-12) / 1e9)
    }

    /// Median wall time of `steps` recorded with plain wgpu calls (bind groups made beforehand, one encoder,
    /// one compute pass, submit, wait), the least any runtime can spend: the reference for dispatch overhead.
    pub fn time_raw(&self, steps: &[BoundDispatch], repeat: usize) -> Result<Duration, GpuError> {
        let once = || -> Result<Duration, GpuError> {
            let start = Instant::now();
            let mut encoder = self.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                for step in steps {
                    step.record(&mut pass);
                }
            }
            self.queue.submit([encoder.finish()]);
            self.wait(steps.len())?;
            Ok(start.elapsed())
        };
        once()?;
        let times = (0..repeat.max(1)).map(|_| once()).collect::<Result<Vec<_>, _>>()?;
        Ok(median(times))
    }
}

/// The median of `times` (the upper one of an even count; zero for none).
pub fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}
