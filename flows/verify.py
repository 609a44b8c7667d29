"""Prefect flow ``verify`` and its command line ``python -m flows.verify DIR``: check a shard set completely.

Readers already check the manifest and every file's size and row count when they open a set, and every page's
CRC as they read it; this also compares every file's sha256 with the manifest and reads every value.
"""

from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from flows import quick_exit, terminal
from flows.temporary_server import temporary_server
from storage import cli
from storage.shardset import ShardSet, Verified, verify
from storage.urls import storage_options_field


class VerifyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    shards: str = Field(description="shard set to verify: a local folder or an fsspec URL")
    storage_options: dict[str, Any] | None = storage_options_field("the shard set's URL")


@flow(name="verify", log_prints=True)
def verify_shards(options: VerifyOptions) -> Verified:
    """Verify a shard set (manifest, sizes, row counts, sha256, page checksums, finite values)."""
    result = verify(options.shards, storage_options=options.storage_options)
    get_run_logger().info("verified %d files, %d rows, %d bytes in %s", result.files, result.rows, result.bytes,
                          options.shards)
    return result


def main(argv=None) -> int:
    parser = cli.model_parser(VerifyOptions, prog="python -m flows.verify", positional=["shards"], description=(
        "Verify a shard set: manifest, every file's size, row count and sha256, page checksums, finite values."))
    values, common = cli.split_common(parser.parse_args(argv))
    terminal.configure(common)

    def command() -> int:
        options = VerifyOptions(**values)
        # a folder that is no shard set fails here, before the Prefect server starts
        ShardSet(options.shards, storage_options=options.storage_options)
        with temporary_server():
            result = verify_shards(options)
        print(f"verified {options.shards}: {result.files} files, {result.rows} rows, all sha256 and page checksums "
              "match, every value finite")
        return 0

    return cli.run(command, debug=common.debug)


if __name__ == "__main__":
    quick_exit.exit(main())
