//! How much CPU an idle engine burns: an engine with a live link, left alone
//! after 100 ms of traffic-free warm-up, measured with getrusage.

use std::time::{Duration, Instant};

use comm::{Engine, Error};

/// CPU time (user + system) of this whole process.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out-pointer has no other precondition.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Percent of one core each progress thread uses while the engine is idle.
pub fn measure(window: Duration) -> Result<(usize, f64), Error> {
    let name = format!("idle{}", std::process::id());
    let a = Engine::builder(&name).cores(&[0, 1]).start()?;
    let b = Engine::builder(&name).cores(&[0, 1]).start()?;
    b.serve("echo", |ctx, msg| ctx.reply(msg, msg.data()))?;
    let ep = a.endpoint("probe")?;
    let peer = ep.connect(&format!("comm://{}/echo", b.listen_addr()).parse()?)?;
    ep.send(peer, ep.alloc(8)?)?;
    ep.recv_timeout(Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_millis(100));
    let (t0, c0) = (Instant::now(), cpu_time());
    std::thread::sleep(window);
    let (wall, cpu) = (t0.elapsed(), cpu_time() - c0);
    let threads = 4; // two engines, two progress threads each
    let percent = 100.0 * cpu.as_secs_f64() / wall.as_secs_f64() / threads as f64;
    drop(ep);
    a.shutdown()?;
    b.shutdown()?;
    Ok((threads, percent))
}
