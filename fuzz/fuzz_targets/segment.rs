//! Super-frames (a 12-byte vnet header, then the frame) into software segmentation, checksum
//! completion and coalescing: never a panic; the segmenter yields exactly `count()` segments
//! of at most `max_len()` bytes; coalescing what it cut never takes more segments than that.
#![no_main]

// The module is I/O-free and depends on smoltcp only: compiled here as it is.
#[allow(dead_code)]
#[path = "../../vswitch/src/datapath/segment.rs"]
mod segment;

use libfuzzer_sys::fuzz_target;
use segment::{finish_csum, offload_tcp, Coalescer, TcpSegmenter, VnetHdr};

fuzz_target!(|data: &[u8]| {
    let Some(hdr) = VnetHdr::parse(data) else { return };
    let frame = &data[VnetHdr::LEN..];

    let mut copy = frame.to_vec();
    let _ = finish_csum(&mut copy, usize::from(hdr.csum_start), usize::from(hdr.csum_offset));
    let mut copy = frame.to_vec();
    let _ = offload_tcp(&mut copy, (hdr.gso_size > 0).then_some(hdr.gso_size));

    let Ok(mut seg) = TcpSegmenter::new(&hdr, frame) else { return };
    let (count, max_len) = (seg.count(), seg.max_len());
    if count > 4096 {
        return; // tiny gso_size on a big frame: correct, but slow to check
    }
    let mut segments = Vec::with_capacity(count);
    let mut buf = vec![0u8; max_len];
    while let Some(n) = seg.next_into(&mut buf) {
        assert!(n <= max_len);
        segments.push(buf[..n].to_vec());
    }
    assert_eq!(segments.len(), count);

    let Some(first) = segments.first() else { return };
    let Some(mut co) = Coalescer::start(first) else { return };
    for s in &segments[1..] {
        if let Some(r) = co.try_append(first, s) {
            assert!(r.end <= s.len() && r.start <= r.end);
        }
    }
    assert!(co.segments() <= count);
    let mut head = first.clone();
    let _ = co.finish(&mut head);
});
