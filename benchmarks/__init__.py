"""Speed and memory measurements. Each script prints ratios measured side by side in one run."""
