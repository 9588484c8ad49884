// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// An ERC-721 for Cairn's on-chain access tests: the deployer mints token ids of its choice.
contract AccessNft is ERC721, Ownable {
    constructor() ERC721("Cairn Access NFT", "CAN") Ownable(msg.sender) {}

    function mint(address to, uint256 id) external onlyOwner {
        _mint(to, id);
    }
}
