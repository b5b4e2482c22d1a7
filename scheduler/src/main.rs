//! `hami-scheduler`: serves the kube-scheduler extender API.

fn main() -> anyhow::Result<()> {
    Ok(())
}
