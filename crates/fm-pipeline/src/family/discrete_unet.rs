//! Discrete flow matching on images (`--model discrete-unet`): the U-Net as
//! the posterior of every pixel token ([`DiscreteUNet`]: one-hot states in,
//! one logit per token value out), with the U-Net's presets, class
//! conditioning and guidance; training, sampling and the ELBO are
//! `discrete.rs`'s.

use std::cell::RefCell;
use std::collections::HashMap;

use candle::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use fm_core::SeededRng;
use fm_models::unet::{DiscreteUNet as DiscreteUNetNet, DiscreteUNetConfig};
use fm_models::ModelConfig;

use super::discrete::{self, DiscreteModel, DiscreteTrainer, TokenNet};
use super::velocity::DEFAULT_IMAGE_BATCH;
use super::{unet, Family, TrainedModel, Trainer};
use crate::error::bail;
use crate::{Result, ResultExt, RunConfig, RunRecord, RunSettings, SolverChoice, TrainingData};

/// The discrete U-Net family.
#[derive(Debug)]
pub(crate) struct DiscreteUNet;

impl Family for DiscreteUNet {
    fn name(&self) -> &'static str {
        "discrete-unet"
    }

    fn accepts(&self, name: &str) -> bool {
        ["discrete-unet", "discrete-u-net"].iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    fn owns(&self, model: &ModelConfig) -> bool {
        matches!(model, ModelConfig::DiscreteUNet(_))
    }

    fn resolve(&'static self, c: &RunConfig) -> Result<RunSettings> {
        // The U-Net's settings; the source, objective and scheduler are the discrete ones.
        let images = RunConfig { source: None, objective: None, scheduler: None, ..c.clone() };
        let (mut s, spec) = unet::resolve_images(self, &images)?;
        discrete::resolve_discrete(&mut s, c)?;
        s.network.label_dropout = discrete::label_dropout(c, spec.class_cond)?;
        s.network.unet = Some(spec);
        Ok(s)
    }

    fn config_of_record(&self, r: &RunRecord, model: &ModelConfig) -> Result<RunConfig> {
        let ModelConfig::DiscreteUNet(m) = model else { bail!("not a discrete U-Net checkpoint") };
        let mut c = discrete::config_of_record(self, r)?;
        c.class_cond = m.unet.num_classes.is_some().then_some(true);
        Ok(c)
    }

    fn resume(&'static self, record: &RunRecord, model: &ModelConfig) -> Result<RunSettings> {
        let ModelConfig::DiscreteUNet(m) = model else { bail!("not a discrete U-Net checkpoint") };
        let mut s = self.resolve(&self.config_of_record(record, model)?)?;
        if let Some(spec) = &mut s.network.unet {
            spec.exact = Some(m.unet.clone());
        }
        discrete::restore(&mut s, record)?;
        Ok(s)
    }

    fn prepare_data(&self, s: &RunSettings, data: &mut TrainingData) -> Result<()> {
        discrete::prepare_data(s, data)
    }

    fn configure(&self, s: &RunSettings, data: &TrainingData) -> Result<ModelConfig> {
        let (d, grid) = discrete::tokens_of(s, data)?;
        let spec = s.network.unet.as_ref().context("the U-Net's settings are missing")?;
        let info =
            data.image_info().context("--model discrete-unet needs image data (--data mnist:DIR, ...)")?;
        let states = d.source.states(grid.bins);
        let mut unet = spec.build(info, data.num_classes())?;
        unet.in_channels = info.channels * states;
        unet.out_channels = Some(info.channels * grid.bins);
        let config = DiscreteUNetConfig { image_channels: info.channels, vocab: grid.bins, states, unet };
        config.validate().context("--model discrete-unet")?;
        Ok(ModelConfig::DiscreteUNet(config))
    }

    fn trainer(
        &self,
        model: &ModelConfig,
        s: &RunSettings,
        _data: &TrainingData,
        device: &Device,
    ) -> Result<Box<dyn Trainer>> {
        let ModelConfig::DiscreteUNet(config) = model else { bail!("not a discrete U-Net configuration") };
        let mut init_rng = SeededRng::for_stream(s.seed, "init");
        let (net, varmap) = DiscreteUNetNet::init(config, &mut init_rng, DType::F32, device)?;
        Ok(Box::new(DiscreteTrainer::new(net, varmap, s, config.vocab)?))
    }

    fn load(
        &self,
        model: &ModelConfig,
        tensors: HashMap<String, Tensor>,
        record: &RunRecord,
        device: &Device,
    ) -> Result<Box<dyn TrainedModel>> {
        let ModelConfig::DiscreteUNet(config) = model else { bail!("not a discrete U-Net checkpoint") };
        let net = DiscreteUNetNet::new(config, VarBuilder::from_tensors(tensors, DType::F32, device))?;
        let u = &config.unet;
        let image = crate::ImageShape { channels: config.image_channels, height: u.height, width: u.width };
        Ok(Box::new(DiscreteModel::of_record(
            net,
            record,
            config.vocab,
            config.seq_len(),
            Some(image),
            DEFAULT_IMAGE_BATCH,
        )?))
    }

    fn record(&self, s: &RunSettings, r: &mut RunRecord) {
        discrete::record(s, r);
    }

    fn describe_model(&self, model: &ModelConfig) -> String {
        match model {
            ModelConfig::DiscreteUNet(m) => format!(
                "discrete {} on {} tokens of {} values",
                unet::describe(&ModelConfig::UNet(m.unet.clone())),
                m.seq_len(),
                m.vocab
            ),
            other => format!("{other:?}"),
        }
    }

    fn describe_objective(&self, s: &RunSettings) -> String {
        discrete::describe_objective(s)
    }

    fn describe_path(&self, s: &RunSettings) -> String {
        discrete::describe_path(s)
    }

    fn sampler_label(&self, solver: &SolverChoice) -> String {
        discrete::sampler_label(solver)
    }

    fn default_sample_steps(&self) -> Option<usize> {
        Some(discrete::DEFAULT_SAMPLE_STEPS)
    }

    fn likelihood_bound(&self) -> bool {
        true
    }
}

impl TokenNet for DiscreteUNetNet {
    fn token_logits(
        &self,
        x: &Tensor,
        t: &Tensor,
        labels: Option<&Tensor>,
        rng: Option<&RefCell<SeededRng>>,
    ) -> Result<Tensor> {
        Ok(self.logits_with(x, t, labels, rng)?)
    }

    fn null_class(&self) -> Option<u32> {
        DiscreteUNetNet::null_class(self)
    }
}
