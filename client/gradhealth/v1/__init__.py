"""Generated from proto/gradhealth/v1 by scripts/gen_proto.py; do not edit."""
