"""The control protocol between `smcroutectl` and `smcrouted`.

Four modules, so that each side loads only what it uses:

- `smcroute.ipc.request`: the request line, importable alone (smcroutectl
  sends a show with it before its other imports);
- `smcroute.ipc.codec`: the wire format and its pure encoders and decoders;
- `smcroute.ipc.server`: `ControlServer`, run inside the daemon's loop;
- `smcroute.ipc.client`: `ControlClient`, the blocking client of `smcroutectl`.

This package imports nothing itself.
"""
