//! `sim://ble`: the emulator's scene ([`fieldgate_ble::emulator::Scene`]) streamed in real
//! time (or faster, `sim_speed`), as a scanner would hear it.

use std::collections::VecDeque;
use std::time::Duration;

use fieldgate_ble::emulator::{Scene, SceneOptions, ENCRYPTED_ADDRESS, TICK_MS};
use fieldgate_ble::{Address, Advertisement, BindKey};

use super::backend::{AdvertSource, NextFuture};
use super::options::BleOptions;

pub struct SimSource {
    scene: Scene,
    pending: VecDeque<Advertisement>,
    ticks: tokio::time::Interval,
}

impl SimSource {
    pub fn new(options: &BleOptions) -> SimSource {
        let scene = Scene::new(&SceneOptions {
            street: options.sim_street,
            faults: options.sim_faults,
            seed: 1,
            beacon_away: options.sim_beacon_away.map(|(leave, back)| {
                let tick = |d: Duration| (d.as_millis() / u128::from(TICK_MS)) as u64;
                (tick(leave), tick(back))
            }),
            // From the clock: a restarted daemon's emulated sensor is not a replay of
            // the one it heard before.
            counter_base: Some(fieldgate_ble::emulator::counter_from_clock()),
        });
        let period = Duration::from_millis(TICK_MS) / options.sim_speed.max(1);
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        SimSource {
            scene,
            pending: VecDeque::new(),
            ticks,
        }
    }
}

impl AdvertSource for SimSource {
    fn next(&mut self) -> NextFuture<'_> {
        Box::pin(async move {
            loop {
                if let Some(adv) = self.pending.pop_front() {
                    return Ok(adv);
                }
                self.ticks.tick().await;
                self.pending.extend(self.scene.tick());
            }
        })
    }

    fn built_in_keys(&self) -> Vec<(Address, BindKey)> {
        vec![(ENCRYPTED_ADDRESS, self.scene.bindkey().clone())]
    }
}
