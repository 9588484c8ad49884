// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ERC721Holder} from "@openzeppelin/contracts/token/ERC721/utils/ERC721Holder.sol";
import {ERC1155Holder} from "@openzeppelin/contracts/token/ERC1155/utils/ERC1155Holder.sol";

/// A minimal ERC-1271 contract wallet for Cairn's on-chain access tests: a signature is valid when
/// it recovers to the owner given at deployment. A malformed or foreign signature never reverts; it
/// answers 0xffffffff. It accepts ERC-721 and ERC-1155 tokens, so that it can hold access tokens.
contract Wallet1271 is IERC1271, ERC721Holder, ERC1155Holder {
    address public immutable owner;

    constructor(address owner_) {
        owner = owner_;
    }

    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(hash, signature);
        if (err == ECDSA.RecoverError.NoError && signer == owner && signer != address(0)) {
            return IERC1271.isValidSignature.selector;
        }
        return 0xffffffff;
    }
}
