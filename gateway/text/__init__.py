"""Message text: GSM 03.38, Latin-1, UCS-2, UDH, segmentation, footers. Standard library only."""
