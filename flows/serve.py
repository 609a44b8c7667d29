"""Serve every simshard deployment from this one process (no work pool needed):

    python -m flows.serve

Runs until interrupted; the nightly schedule stays active when the process stops (pause_on_shutdown=False).
"""

from prefect import serve

from flows.deployments import DEPLOYMENTS


def main() -> None:
    serve(*(d["flow"].to_deployment(name=name, cron=d["cron"], parameters=d["parameters"])
            for name, d in DEPLOYMENTS.items()), pause_on_shutdown=False)


if __name__ == "__main__":
    main()
