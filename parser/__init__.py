"""smcroute.conf and smcroutectl argument parsing (lark) into smcroute.model."""
