//! Training steps: a model with a scalar loss output becomes one program that runs the forward pass, the
//! loss's gradient with respect to every float param (`autodiff::grad`) and the optimizer's update, whose
//! math is the standard library's `std/optim` functions, inlined here like any call (spec/training.md).
//! The params and the optimizer's state (step count, momentum buffers, Adam's moments) are params of the
//! step; each new value is an output named `next.<key>` and an `ir::Update` carries it into its param after
//! the run, so the state never leaves the device. The learning rate is the input `optim.lr`, so a schedule
//! needs no recompilation; the other hyper-parameters are compile-time constants.

use super::call::ArgValue;
use super::{Elab, Scope, Value};
use crate::diag::{Code, Diagnostic};
use crate::ir::{self, DType, Init, NodeId, Op, TensorType, Update};
use crate::span::Span;
use crate::syntax::ast;
use tdsl_runtime::train::{LR_INPUT, STEP_KEY, next_output, state_key};

/// What makes a model a training step: its loss output and the optimizer.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSpec {
    /// The model to train.
    pub model: String,
    /// The name of its scalar loss output.
    pub loss: String,
    /// The update rule.
    pub optimizer: Optimizer,
    /// Clip the gradients to this global Euclidean norm first (torch.nn.utils.clip_grad_norm_).
    pub clip_norm: Option<f64>,
}

/// An optimizer exactly as `torch.optim` defines it (the hyper-parameters besides the learning rate).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// torch.optim.SGD.
    Sgd {
        /// Momentum factor (0: plain SGD, no buffer).
        momentum: f64,
        /// Dampening of the momentum.
        dampening: f64,
        /// Nesterov momentum.
        nesterov: bool,
        /// L2 penalty added to the gradient.
        weight_decay: f64,
    },
    /// torch.optim.Adam (`decoupled: false`) or torch.optim.AdamW (`decoupled: true`).
    Adam {
        /// Decay of the first moment.
        beta1: f64,
        /// Decay of the second moment.
        beta2: f64,
        /// Added to the denominator.
        eps: f64,
        /// Weight decay: an L2 penalty on the gradient (Adam) or a decay of the param (AdamW).
        weight_decay: f64,
        /// AdamW's decoupled weight decay.
        decoupled: bool,
    },
}

impl Optimizer {
    /// The names of the per-param state tensors, as `torch.optim` names them in its state dict.
    pub fn state_names(&self) -> &'static [&'static str] {
        match self {
            Optimizer::Sgd { momentum, .. } if *momentum == 0.0 => &[],
            Optimizer::Sgd { .. } => &["momentum_buffer"],
            Optimizer::Adam { .. } => &["exp_avg", "exp_avg_sq"],
        }
    }
}

impl Elab<'_> {
    /// Turns the model just elaborated into its training step (see the module comment). Problems are
    /// reported at `at` (the model's name).
    pub(super) fn training_step(&mut self, spec: &TrainSpec, at: Span) {
        let Some(output) = self.graph.outputs.iter().find(|o| o.name == spec.loss) else {
            let names: Vec<&str> = self.graph.outputs.iter().map(|o| o.name.as_str()).collect();
            self.error(
                Diagnostic::new(Code::E0505, at, format!("model `{}` has no output `{}`", spec.model, spec.loss))
                    .note(format!("its outputs are: {}", names.join(", ")))
                    .note("training needs the loss as a scalar float output")
                    .rule("R6.6"),
            );
            return;
        };
        let Some(loss) = self.loss(Value::Tensor(output.node), at) else { return };
        let params: Vec<NodeId> =
            self.graph.params.iter().copied().filter(|&p| self.graph.nodes[p].ty.dtype.is_float()).collect();
        if params.is_empty() {
            self.error(
                Diagnostic::new(Code::E0505, at, format!("model `{}` has no float params to train", spec.model))
                    .rule("R6.6"),
            );
            return;
        }
        for name in [LR_INPUT] {
            if self.graph.inputs.iter().any(|&i| matches!(&self.graph.nodes[i].op, Op::Input { name: n } if n == name))
            {
                self.error(
                    Diagnostic::new(Code::E0505, at, format!("the model already has an input `{name}`"))
                        .note("a training step takes its learning rate as this input")
                        .rule("R6.6"),
                );
                return;
            }
        }
        let Some(grads) = self.differentiate(loss, &params, at) else { return };
        let grads = match spec.clip_norm {
            Some(max_norm) => match self.clipped(&grads, max_norm, at) {
                Some(grads) => grads,
                None => return,
            },
            None => grads,
        };
        let scalar = TensorType { dtype: DType::F32, shape: vec![] };
        let lr = self.add_node(Op::Input { name: LR_INPUT.to_string() }, scalar.clone(), at);
        self.graph.inputs.push(lr);
        let step = self.state_param(STEP_KEY, scalar, at);
        let one = Value::Float(1.0);
        let step_next = self.binary(ast::BinOp::Add, Value::Tensor(step), one, at);
        let Value::Tensor(step_next) = step_next else { return };
        self.carry(STEP_KEY, step, step_next);
        for (param, grad) in params.into_iter().zip(grads) {
            let Op::Param { key } = &self.graph.nodes[param].op else { continue };
            let key = key.clone();
            let ty = self.graph.nodes[param].ty.clone();
            let (p, g, lr, t) =
                (Value::Tensor(param), Value::Tensor(grad), Value::Tensor(lr), Value::Tensor(step_next));
            let next = match spec.optimizer {
                Optimizer::Sgd { momentum, dampening, nesterov, weight_decay } => {
                    let wd = ("weight_decay", Value::Float(weight_decay));
                    if momentum == 0.0 {
                        self.optim_call("sgd", &[p, g, lr], &[wd], at)
                    } else {
                        let key_buf = state_key("momentum_buffer", &key);
                        let buf = self.state_param(&key_buf, ty.clone(), at);
                        let args = [p.clone(), g.clone(), Value::Tensor(buf), t];
                        let named =
                            [("momentum", Value::Float(momentum)), ("dampening", Value::Float(dampening)), wd.clone()];
                        let Some(buf_next) = self.optim_call("sgd_momentum_buffer", &args, &named, at) else {
                            return;
                        };
                        self.carry(&key_buf, buf, buf_next);
                        if nesterov {
                            let named = [("momentum", Value::Float(momentum)), wd];
                            self.optim_call("sgd_nesterov", &[p, g, Value::Tensor(buf_next), lr], &named, at)
                        } else {
                            self.optim_call("sgd_momentum", &[p, Value::Tensor(buf_next), lr], &[], at)
                        }
                    }
                }
                Optimizer::Adam { beta1, beta2, eps, weight_decay, decoupled } => {
                    let l2 = if decoupled { 0.0 } else { weight_decay };
                    let Some(g) =
                        self.optim_call("adam_grad", &[p.clone(), g], &[("weight_decay", Value::Float(l2))], at)
                    else {
                        return;
                    };
                    let (key_m, key_v) = (state_key("exp_avg", &key), state_key("exp_avg_sq", &key));
                    let m = self.state_param(&key_m, ty.clone(), at);
                    let v = self.state_param(&key_v, ty.clone(), at);
                    let b1 = ("beta1", Value::Float(beta1));
                    let b2 = ("beta2", Value::Float(beta2));
                    let args = [Value::Tensor(m), Value::Tensor(g)];
                    let Some(m_next) = self.optim_call("adam_m", &args, std::slice::from_ref(&b1), at) else { return };
                    let args = [Value::Tensor(v), Value::Tensor(g)];
                    let Some(v_next) = self.optim_call("adam_v", &args, std::slice::from_ref(&b2), at) else { return };
                    self.carry(&key_m, m, m_next);
                    self.carry(&key_v, v, v_next);
                    let decay = if decoupled { weight_decay } else { 0.0 };
                    let named = [b1, b2, ("eps", Value::Float(eps)), ("decoupled_weight_decay", Value::Float(decay))];
                    let args = [p, Value::Tensor(m_next), Value::Tensor(v_next), lr, t];
                    self.optim_call("adam", &args, &named, at)
                }
            };
            let Some(next) = next else { return };
            self.carry(&key, param, next);
        }
    }

    /// A param holding optimizer state, starting at zero.
    fn state_param(&mut self, key: &str, ty: TensorType, at: Span) -> NodeId {
        let node = self.add_node(Op::Param { key: key.to_string() }, ty, at);
        self.graph.params.push(node);
        self.graph.inits.push((node, Init::Constant(0.0)));
        node
    }

    /// Makes `next` an output (`next.<key>`) that becomes `param` after each run.
    fn carry(&mut self, key: &str, param: NodeId, next: NodeId) {
        self.graph.outputs.push(ir::Output { name: next_output(key), node: next });
        self.graph.updates.push(Update { output: self.graph.outputs.len() - 1, param });
    }

    /// Inlines the `std/optim` function `name` on tensors `args` (positional) and `named` constants.
    fn optim_call(&mut self, name: &str, args: &[Value], named: &[(&str, Value)], at: Span) -> Option<NodeId> {
        let Some(entry) = self.fns.get(name) else {
            self.error(
                Diagnostic::new(Code::E0505, at, format!("the optimizer needs `{name}` from std/optim"))
                    .note("it is missing or renamed: was std/optim imported under another name?")
                    .rule("R6.6"),
            );
            return None;
        };
        let ident = |name: &str| ast::Ident { name: name.to_string(), span: at };
        let values = args
            .iter()
            .map(|v| ArgValue { name: None, value: v.clone(), span: at })
            .chain(named.iter().map(|(n, v)| ArgValue { name: Some(ident(n)), value: v.clone(), span: at }))
            .collect();
        match self.instantiate(entry, &Scope::default(), None, values, at) {
            Value::Tensor(node) => Some(node),
            _ => None,
        }
    }

    /// The gradients scaled by `clip_scale` of their global norm (torch.nn.utils.clip_grad_norm_).
    fn clipped(&mut self, grads: &[NodeId], max_norm: f64, at: Span) -> Option<Vec<NodeId>> {
        let mut total = Value::Float(0.0);
        for &g in grads {
            let squared = self.binary(ast::BinOp::Mul, Value::Tensor(g), Value::Tensor(g), at);
            let arg = ArgValue { name: None, value: squared, span: at };
            let sum = self.builtin("sum", vec![arg], at, at);
            total = self.binary(ast::BinOp::Add, total, sum, at);
        }
        let norm = self.builtin("sqrt", vec![ArgValue { name: None, value: total, span: at }], at, at);
        let scale = self.optim_call("clip_scale", &[norm], &[("max_norm", Value::Float(max_norm))], at)?;
        grads
            .iter()
            .map(|&g| match self.binary(ast::BinOp::Mul, Value::Tensor(g), Value::Tensor(scale), at) {
                Value::Tensor(node) => Some(node),
                _ => None,
            })
            .collect()
    }
}
