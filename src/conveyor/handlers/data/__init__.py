"""Package data of the built-in job types: the sample store master (``store_master.csv``).

The sample is generated, not collected: ``python -m conveyor.handlers.data.generate`` writes
it again, byte for byte, and a test checks that the shipped file is what the script makes.
"""
