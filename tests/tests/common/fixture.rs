//! The shape of a packet fixture (Katran/Cilium style), shared by the load balancer's and the
//! uplink's fixture tables: a description, a setup (earlier packets of the flow, map changes), an
//! input frame, the expected verdict and output frame, and a drop counter that must move.

use skiff_common::DropReason;

/// A loaded program with its maps, as a fixture drives it.
pub trait FixtureEnv {
    /// Runs the program on `packet` once: its verdict and output frame.
    fn run(&self, packet: &[u8]) -> (i32, Vec<u8>);
    /// A drop counter, summed over CPUs.
    fn drops(&mut self, reason: DropReason) -> u64;
}

pub struct Fixture<E> {
    pub description: &'static str,
    /// Earlier packets of the flow, other flows, map changes.
    pub setup: fn(&mut E),
    pub input: fn(&mut E) -> Vec<u8>,
    pub verdict: i32,
    /// `None`: the frame must come out unchanged.
    pub output: fn(&mut E) -> Option<Vec<u8>>,
    /// A drop/reject counter that must move by exactly one.
    pub counts: Option<DropReason>,
}

pub fn nothing<E>(_: &mut E) {}

pub fn unchanged<E>(_: &mut E) -> Option<Vec<u8>> {
    None
}

impl<E: FixtureEnv> Fixture<E> {
    /// Runs the fixture in `env`, asserting verdict, output bytes and counter.
    pub fn check_in(&self, env: &mut E) {
        (self.setup)(env);
        let before = self.counts.map(|r| env.drops(r));
        let input = (self.input)(env);
        let (verdict, out) = env.run(&input);
        assert_eq!(verdict, self.verdict, "{}: verdict", self.description);
        let expected = (self.output)(env).unwrap_or_else(|| input.clone());
        assert_eq!(hex(&out), hex(&expected), "{}: output packet", self.description);
        if let (Some(reason), Some(before)) = (self.counts, before) {
            assert_eq!(env.drops(reason), before + 1, "{}: {reason:?} counter", self.description);
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}
