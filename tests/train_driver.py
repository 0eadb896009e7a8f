"""Run ``train_and_evaluate`` in a fresh process, for tests that kill, preempt or spread it.

    python tests/train_driver.py WORKDIR '{"model": "test_cnn", ...}' [--devices N]
        [--sleep SECONDS] [--coordinator HOST:PORT --num-processes P --process-id I]

``--sleep`` slows every step down on the host so a test can kill the run at a chosen
moment; it does not change what is computed.
"""
import argparse
import json
import os
import sys

# the checkout under test, whether or not it is the installed copy
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir")
    ap.add_argument("overrides")
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--coordinator")
    ap.add_argument("--num-processes", type=int)
    ap.add_argument("--process-id", type=int)
    args = ap.parse_args()
    # the device count is the driver's; other flags (conftest's collective timeout) carry over
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    os.environ["XLA_FLAGS"] = " ".join(
        [*flags, f"--xla_force_host_platform_device_count={args.devices}"])
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    if args.coordinator:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    from jaxvision import train
    from jaxvision.config import default_config, lock

    config = default_config()
    overrides = json.loads(args.overrides)
    # JSON has lists where the config has tuples (e.g. profile_steps).
    config.update_from_flattened_dict({k: tuple(v) if isinstance(v, list) else v
                                       for k, v in overrides.items()
                                       if not k.startswith("model_kwargs.")})
    for k, v in overrides.items():
        if k.startswith("model_kwargs."):
            config.model_kwargs[k.split(".", 1)[1]] = v
    lock(config)
    if args.sleep:
        from jaxvision.data import pipeline
        import time
        original = pipeline.BatchOrder.indices

        def slow(self, step):
            time.sleep(args.sleep)
            return original(self, step)
        pipeline.BatchOrder.indices = slow
        # streamed data: the loader is called once per step in this process
        from jaxvision.data import loader
        original_call = loader.StepLoader.__call__

        def slow_call(self, step):
            time.sleep(args.sleep)
            return original_call(self, step)
        loader.StepLoader.__call__ = slow_call
    try:
        result = train.train_and_evaluate(config, args.workdir)
    except train.Preempted as e:
        sys.exit(e.code)  # 75 after SIGTERM, 130 after SIGINT
    # as the command line does: a signal after the run is complete leaves the status 0
    from jaxvision.preemption import ignore_after_completion
    ignore_after_completion()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
